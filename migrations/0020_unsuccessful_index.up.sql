-- 0020 unsuccessful_index
--
-- What it does: an index of the jobs that ended in error or were cancelled, by finish time, so
-- that listing them (`imagejobs list --status error`, the dashboard, the API) reads only them
-- instead of walking every finished job until enough of the rare ones turn up.
--
-- Caveats: a plain CREATE INDEX blocks writes to `jobs` while it builds (it reads the whole
-- table; about a second per million rows here). On a large live table, build it first by hand
-- and this migration then does nothing:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_unsuccessful ON jobs (finished_at) WHERE status IN ('error', 'cancelled');

CREATE INDEX IF NOT EXISTS jobs_unsuccessful ON jobs (finished_at) WHERE status IN ('error', 'cancelled');
