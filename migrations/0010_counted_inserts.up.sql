-- 0010 counted_inserts
--
-- What it does: lets a one-job submit write its own queue-position delta instead of paying
-- for the statement-level count trigger (a PL/pgSQL call, a second plan, an aggregate over
-- the transition table: about a fifth of the server's work for a one-job insert). The
-- library's insert writes the job's `job_count_deltas` row in the same statement and, in the
-- same statement, sets the transaction-local marker `imagejobs.counted_insert` to that
-- statement's `statement_timestamp()`; the trigger's WHEN clause skips exactly the statement
-- that carries the marker. Every other INSERT into `jobs` (batches, hand-written SQL,
-- another client) is still counted by the trigger, as before. Clients get INSERT on
-- `job_count_deltas` for their own deltas.
--
-- Caveats: a statement that sets `imagejobs.counted_insert` to its own statement time by
-- hand must write its own deltas (nothing else sets it). A client role can now append
-- deltas: a wrong one skews queue positions, never a job's state or order.

DROP TRIGGER jobs_count_inserted ON jobs;
CREATE TRIGGER jobs_count_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    WHEN (current_setting('imagejobs.counted_insert', true) IS DISTINCT FROM statement_timestamp()::text)
    EXECUTE FUNCTION jobs_count_inserted();

GRANT INSERT ON job_count_deltas TO imagejobs_client;
