import ImageJobsCLI

await ImageJobsCommand.runMain()
