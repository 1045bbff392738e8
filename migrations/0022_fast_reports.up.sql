-- 0022 fast_reports
--
-- What it does: makes every reporting view answer within milliseconds whatever the size of the
-- queue, so `imagejobs report`, dashboards and monitoring can read them often. The views read
-- folded counts, small partial indexes and bounded samples instead of every pending job:
--
-- report_queue_depth: pending and running jobs per priority (finished jobs left this view:
--   their totals grow with the history kept; report_throughput counts them per minute).
--   pending = jobs in claim order (the folded counts positions use, exact) + jobs held at a
--   gate (delayed, capped, rate-limited, paused), counted up to 10,000;
--   capped      true when more than 10,000 are held: `jobs` is then a lower bound.
-- report_oldest_pending: pending and ready counted the same way (`capped` likewise); the
--   oldest job from a new index of pending jobs by submit time.
-- report_throughput: completions per minute from the completion counts the count triggers
--   keep; errors from the index of unsuccessful jobs; retried and timed-out attempts from the
--   jobs that have failed attempts (a new partial index holds only those).
-- report_latency: percentiles over the jobs among the latest 10,000 finishes that finished in
--   the window after running (all of the window's when it holds fewer); `jobs` is how many.
-- report_top_failures, report_retries: the jobs with failed attempts only (the same index).
-- report_conversations: the 50 conversations active last (by their latest submit or finish
--   in the window), each counted over its newest 200 jobs;
--   capped      true when it has more: its counts are then of those 200.
-- report_batches: the newest batches that are unfinished or finished in the window, up to 100
--   of them and while their jobs add up to under 20,000 (the first always: at most 10,000),
--   each counted exactly.
--
-- The views keep their columns (operators' views over them stay valid); `capped` is new, last.
--
-- Caveats: two indexes are built, which blocks writes to `jobs` while they build (about a
-- second per million rows here). On a large live table, build them first by hand and this
-- migration then skips them:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_pending_age ON jobs (priority, created_at) WHERE status = 'pending';
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_failed_attempts ON jobs (finished_at) WHERE errors <> '[]'::jsonb;
-- The pending index costs each submit one more index entry (measured in BENCHMARKS.md).

CREATE INDEX IF NOT EXISTS jobs_pending_age ON jobs (priority, created_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS jobs_failed_attempts ON jobs (finished_at) WHERE errors <> '[]'::jsonb;

-- Pending jobs per priority without reading them: `tagged` (in claim order) from the folded
-- counts; `held` (at a gate) and `held_ready` (of those, due) counted up to 10,000 in all;
-- `tagged_later` (in claim order but waiting for a retry's time) from the retry index.
CREATE VIEW report_pending_counts AS
    WITH tagged AS (
        SELECT priority, sum(n)::bigint AS n
        FROM (SELECT priority, n FROM job_counts_hour WHERE metric = 0
              UNION ALL
              SELECT priority, n FROM job_count_deltas WHERE metric = 0) c
        GROUP BY priority
    ), held AS (
        SELECT priority, next_attempt_at FROM jobs WHERE status = 'pending' AND tag IS NULL LIMIT 10001
    ), later AS (
        SELECT priority, count(*) AS n FROM jobs
        WHERE status = 'pending' AND retry_count > 0 AND next_attempt_at > now() AND tag IS NOT NULL
        GROUP BY priority
    )
    SELECT p.priority,
           coalesce(t.n, 0) AS tagged,
           coalesce(l.n, 0) AS tagged_later,
           (SELECT count(*) FROM held h WHERE h.priority = p.priority) AS held,
           (SELECT count(*) FROM held h WHERE h.priority = p.priority AND h.next_attempt_at <= now()) AS held_ready,
           (SELECT count(*) > 10000 FROM held) AS capped
    FROM unnest(enum_range(NULL::job_priority)) AS p(priority)
    LEFT JOIN tagged t USING (priority)
    LEFT JOIN later l USING (priority);

CREATE OR REPLACE VIEW report_queue_depth AS
    SELECT 'pending'::job_status AS status, c.priority, (c.tagged + c.held)::bigint AS jobs, c.capped
    FROM report_pending_counts c
    UNION ALL
    SELECT 'running'::job_status, p.priority,
           (SELECT count(*) FROM jobs j WHERE j.status = 'running' AND j.priority = p.priority), false
    FROM unnest(enum_range(NULL::job_priority)) AS p(priority)
    ORDER BY 1, 2;

CREATE OR REPLACE VIEW report_oldest_pending AS
    SELECT c.priority,
           (c.tagged + c.held)::bigint AS pending,
           (c.tagged - c.tagged_later + c.held_ready)::bigint AS ready,
           o.created_at AS oldest_created_at,
           round(extract(epoch FROM now() - o.created_at)::numeric, 3) AS oldest_age_s,
           c.capped
    FROM report_pending_counts c
    LEFT JOIN LATERAL (
        SELECT j.created_at FROM jobs j WHERE j.status = 'pending' AND j.priority = c.priority ORDER BY j.created_at LIMIT 1
    ) o ON true
    ORDER BY c.priority;

-- The jobs a window's failures belong to: unfinished ones with failed attempts and those that
-- finished in the window with some (`jobs_failed_attempts`).
CREATE VIEW report_window_failed_jobs AS
    SELECT * FROM jobs WHERE errors <> '[]'::jsonb AND finished_at IS NULL
    UNION ALL
    SELECT * FROM jobs WHERE errors <> '[]'::jsonb AND finished_at >= report_window_start();

CREATE OR REPLACE VIEW report_attempt_errors AS
    SELECT j.id AS job_id, j.priority,
           (e->>'attempt')::int AS attempt,
           (e->>'at')::timestamptz AS at,
           e->>'message' AS message,
           coalesce((e->>'retried')::boolean,
                    NOT (j.status = 'error' AND (e->>'attempt')::int = j.attempt)) AS retried,
           coalesce((e->>'timed_out')::boolean, (e->>'message') LIKE 'timed out after %') AS timed_out
    FROM report_window_failed_jobs j, jsonb_array_elements(j.errors) AS e
    WHERE (e->>'at')::timestamptz >= report_window_start();

CREATE OR REPLACE VIEW report_throughput AS
    SELECT minute,
           sum(completed)::bigint AS completed,
           sum(error)::bigint AS error,
           sum(retried)::bigint AS retried,
           sum(timed_out)::bigint AS timed_out
    FROM (
        -- Completions: whole minutes after the window's first, its first minute by the second,
        -- and the counts not folded yet.
        SELECT minute, n AS completed, 0 AS error, 0 AS retried, 0 AS timed_out
        FROM job_counts_minute
        WHERE metric = 1 AND minute >= date_trunc('minute', report_window_start()) + interval '1 minute'
        UNION ALL
        SELECT date_trunc('minute', second), n, 0, 0, 0
        FROM job_counts_second
        WHERE metric = 1 AND second >= report_window_start()
          AND second < date_trunc('minute', report_window_start()) + interval '1 minute'
        UNION ALL
        SELECT date_trunc('minute', second), n, 0, 0, 0
        FROM job_count_deltas
        WHERE metric = 1 AND second >= report_window_start()
        UNION ALL
        SELECT date_trunc('minute', finished_at), 0, 1, 0, 0
        FROM jobs
        WHERE status = 'error' AND finished_at >= report_window_start()
        UNION ALL
        SELECT date_trunc('minute', at), 0, 0, 1, 0 FROM report_attempt_errors WHERE retried
        UNION ALL
        SELECT date_trunc('minute', at), 0, 0, 0, 1 FROM report_attempt_errors WHERE timed_out
    ) events
    GROUP BY minute
    HAVING sum(completed) + sum(error) + sum(retried) + sum(timed_out) > 0
    ORDER BY minute;

CREATE OR REPLACE VIEW report_latency AS
    SELECT priority, count(*) AS jobs,
           percentile_cont(0.50) WITHIN GROUP (ORDER BY wait_s) AS wait_p50_s,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY wait_s) AS wait_p95_s,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY wait_s) AS wait_p99_s,
           percentile_cont(0.50) WITHIN GROUP (ORDER BY run_s) AS run_p50_s,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY run_s) AS run_p95_s,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY run_s) AS run_p99_s
    FROM (
        -- A job's next_attempt_at is its submit time until a retry moves it; the final attempt's
        -- claim was at started_at, its finish at finished_at.
        SELECT priority,
               greatest(0, extract(epoch FROM started_at - least(next_attempt_at, started_at)))::float8 AS wait_s,
               extract(epoch FROM finished_at - started_at)::float8 AS run_s
        FROM (SELECT priority, status, next_attempt_at, started_at, finished_at FROM jobs
              WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 10000) latest
        WHERE finished_at >= report_window_start() AND status IN ('completed', 'error') AND started_at IS NOT NULL
    ) finished
    GROUP BY priority
    ORDER BY priority;

CREATE OR REPLACE VIEW report_retries AS
    SELECT j.id AS job_id, j.group_id AS conversation_id, j.batch_id, j.kind, j.priority, j.status,
           j.retry_count, j.max_retries, j.attempt AS attempts,
           (j.errors->-1->>'at')::timestamptz AS last_error_at,
           j.errors->-1->>'message' AS last_error
    FROM report_window_failed_jobs j
    ORDER BY j.retry_count DESC, last_error_at DESC;

CREATE OR REPLACE VIEW report_conversations AS
    WITH activity AS (
        -- Who was active last: the newest submits (by id: time-ordered), the latest finishes in
        -- the window, and the running jobs.
        (SELECT group_id, created_at AS at FROM jobs ORDER BY id DESC LIMIT 500)
        UNION ALL
        (SELECT group_id, finished_at FROM jobs WHERE finished_at >= report_window_start() ORDER BY finished_at DESC LIMIT 500)
        UNION ALL
        (SELECT group_id, started_at FROM jobs WHERE status = 'running')
    ), chosen AS (
        SELECT group_id, max(at) AS last_at FROM activity GROUP BY group_id ORDER BY max(at) DESC LIMIT 50
    )
    SELECT c.group_id AS conversation_id, s.jobs, s.pending, s.running, s.completed, s.error, s.cancelled,
           s.first_created_at, s.last_finished_at,
           EXISTS (SELECT 1 FROM jobs j WHERE j.group_id = c.group_id ORDER BY j.created_at DESC OFFSET 200 LIMIT 1) AS capped
    FROM chosen c
    CROSS JOIN LATERAL (
        SELECT count(*) AS jobs,
               count(*) FILTER (WHERE j.status = 'pending') AS pending,
               count(*) FILTER (WHERE j.status = 'running') AS running,
               count(*) FILTER (WHERE j.status = 'completed') AS completed,
               count(*) FILTER (WHERE j.status = 'error') AS error,
               count(*) FILTER (WHERE j.status = 'cancelled') AS cancelled,
               min(j.created_at) AS first_created_at, max(j.finished_at) AS last_finished_at
        FROM (SELECT j.status, j.created_at, j.finished_at FROM jobs j
              WHERE j.group_id = c.group_id ORDER BY j.created_at DESC LIMIT 200) j
        WHERE j.status IN ('pending', 'running') OR j.finished_at >= report_window_start()
    ) s
    WHERE s.jobs > 0
    ORDER BY c.last_at DESC;

CREATE OR REPLACE VIEW report_batches AS
    SELECT b.id AS batch_id, b.group_id AS conversation_id, b.created_at, b.job_count,
           c.pending, c.running, c.completed, c.error, c.cancelled,
           round(c.finished::numeric / b.job_count, 4) AS done_fraction,
           b.finished_at
    FROM (SELECT *, sum(job_count) OVER (ORDER BY id DESC ROWS UNBOUNDED PRECEDING) - job_count AS jobs_before
          FROM (SELECT * FROM batches
                WHERE finished_at IS NULL OR finished_at >= report_window_start()
                ORDER BY id DESC LIMIT 100) newest) b
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE j.status = 'pending') AS pending,
               count(*) FILTER (WHERE j.status = 'running') AS running,
               count(*) FILTER (WHERE j.status = 'completed') AS completed,
               count(*) FILTER (WHERE j.status = 'error') AS error,
               count(*) FILTER (WHERE j.status = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE j.finished_at IS NOT NULL) AS finished
        FROM jobs j WHERE j.batch_id = b.id
    ) c
    WHERE b.jobs_before < 20000 AND c.pending + c.running + c.completed + c.error + c.cancelled > 0
    ORDER BY b.created_at DESC;
