-- 0001 create_jobs (down)
--
-- What it does: drops every table and type 0001 created.
-- Caveats: destroys all jobs and batches. There is no undo.

DROP TABLE workers;
DROP TABLE jobs;
DROP TABLE batches;
DROP TYPE job_status;
DROP TYPE job_priority;
