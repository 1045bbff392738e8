-- 0003 job_results (down)
--
-- What it does: drops `job_results`.
-- Caveats: deletes every stored image. There is no undo.

DROP TABLE job_results;
