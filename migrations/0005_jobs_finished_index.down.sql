-- 0005 jobs_finished_index (down)
--
-- What it does: drops the `finished_at` index.
-- Caveats: without it retention and the reporting windows scan the whole table.
DROP INDEX IF EXISTS jobs_finished;
