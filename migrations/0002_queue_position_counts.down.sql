-- 0002 queue_position_counts (down)
--
-- What it does: drops the count triggers and tables; queue position then has no summaries.
-- Caveats: none; the counts are derived data.

DROP TRIGGER jobs_count_deleted ON jobs;
DROP TRIGGER jobs_count_updated ON jobs;
DROP TRIGGER jobs_count_inserted ON jobs;
DROP FUNCTION jobs_count_deleted();
DROP FUNCTION jobs_count_updated();
DROP FUNCTION jobs_count_inserted();
DROP TABLE job_counts_minute;
DROP TABLE job_counts_second;
DROP TABLE job_count_deltas;
