-- 0010 counted_inserts (down)
--
-- What it does: the count trigger counts every INSERT into `jobs` again, and clients lose
-- INSERT on `job_count_deltas`.
-- Caveats: a library that still writes its own deltas would count its jobs twice; roll back
-- the program together with the schema.

DROP TRIGGER jobs_count_inserted ON jobs;
CREATE TRIGGER jobs_count_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_inserted();

REVOKE INSERT ON job_count_deltas FROM imagejobs_client;
