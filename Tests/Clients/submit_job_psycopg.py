"""Enqueues ImageJobs jobs from Python with psycopg, a client this project did not write, the
way a chat backend would: inside its own transaction, together with a row of its own.

Usage: submit_job_psycopg.py CONNINFO CONVERSATION_ID
Prints one JSON object: the ids it committed and rolled back, the app row's fate, the error a
bad item raised (its column and message) and the size of a batch it submitted.
"""
import json
import sys

import psycopg
from psycopg.types.json import Jsonb

conninfo, conversation = sys.argv[1], sys.argv[2]
report = {}

with psycopg.connect(conninfo) as conn:
    conn.execute("SET ROLE imagejobs_client")
    conn.execute("CREATE TEMP TABLE chat_messages (id serial PRIMARY KEY, body text NOT NULL, job_id uuid)")
    conn.commit()

    # The app's message and its image job commit together.
    with conn.transaction():
        job_id = conn.execute(
            "SELECT submit_job(%s)", [Jsonb({"conversation_id": conversation, "prompt": "a red fox in snow"})]
        ).fetchone()[0]
        conn.execute("INSERT INTO chat_messages (body, job_id) VALUES (%s, %s)", ["committed with its job", job_id])
    report["committed"] = str(job_id)
    report["message_row"] = conn.execute(
        "SELECT body FROM chat_messages WHERE job_id = %s", [job_id]).fetchone()[0]

    # ... and roll back together.
    class Abandon(Exception):
        pass

    try:
        with conn.transaction():
            rolled_back = conn.execute(
                "SELECT submit_job(%s)", [Jsonb({"conversation_id": conversation, "prompt": "never queued"})]
            ).fetchone()[0]
            raise Abandon()
    except Abandon:
        pass
    report["rolled_back"] = str(rolled_back)

    try:
        with conn.transaction():
            conn.execute("SELECT submit_job(%s)", [Jsonb({"conversation_id": conversation, "prompt": "x", "width": 100})])
    except psycopg.errors.InvalidParameterValue as error:
        report["error_column"] = error.diag.column_name
        report["error_message"] = error.diag.message_primary

    items = [{"conversation_id": conversation, "prompt": f"frame {i}"} for i in range(3)]
    batch_id, job_ids = conn.execute("SELECT * FROM submit_jobs(%s)", [Jsonb(items)]).fetchone()
    conn.commit()
    report["batch_jobs"] = len(job_ids)

print(json.dumps(report))
