-- 0019 progress
--
-- What it does: a running job's progress, `step` of `total` as its handler reports it
-- (`JobContext.reportProgress`). Each worker writes the progress of its running attempts at
-- most once a second, in one statement for all of them, fenced by the attempt (a late or
-- rescued attempt writes nothing); a claim clears it. The columns are not indexed, so the
-- write can be a HOT update.
--
-- Caveats: none; adding nullable columns rewrites nothing.

ALTER TABLE jobs ADD COLUMN progress_step integer, ADD COLUMN progress_total integer;
GRANT UPDATE (progress_step, progress_total) ON jobs TO imagejobs_worker;
