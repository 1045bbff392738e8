-- 0006 reporting (down)
--
-- What it does: drops the reporting views and gives the reporting role back the direct table
-- rights migration 0004 granted (everything but prompts and image bytes).
-- Caveats: dashboards reading the views stop working.

DROP VIEW report_workers, report_batches, report_conversations, report_retries,
          report_top_failures, report_latency, report_throughput, report_oldest_pending,
          report_queue_depth, report_attempt_errors, report_window_jobs;
DROP FUNCTION report_window_start(), report_dead_after();

GRANT SELECT (id, seq, conversation_id, batch_id, kind, priority, status, retry_count, max_retries,
              next_attempt_at, timeout, attempt, worker_id, created_at, started_at, heartbeat_at,
              deadline_at, finished_at, error_message, errors) ON jobs TO imagejobs_reporter;
GRANT SELECT ON batches, workers, job_counts_second, job_counts_minute TO imagejobs_reporter;
GRANT SELECT (job_id, content_type, width, height, byte_size, sha256, backend, generation_ms, created_at)
    ON job_results TO imagejobs_reporter;
