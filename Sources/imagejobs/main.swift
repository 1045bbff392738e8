print("imagejobs")
