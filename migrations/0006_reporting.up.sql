-- 0006 reporting
--
-- What it does: adds the reporting views operators and analysts read (and `imagejobs report`
-- prints), and makes them the reporting role's whole view of the queue. Every view is owned by
-- the migration role, so `imagejobs_reporter` reads them without any right on the tables; no
-- view exposes a job's parameters (its prompt) or its image. To let a role read prompts, grant
-- it explicitly: `GRANT SELECT (id, params) ON jobs TO that_role;`.
--
-- Time windows: the windowed views cover the last hour by default. A session chooses another
-- window with `SET imagejobs.report_window = '24 hours'` (any interval; `imagejobs report
-- --since` sets it), before reading. All times come from the database clock.
--
-- The views, column by column:
--
-- report_queue_depth: one row per status and priority (zeros included).
--   status, priority     the pair counted;
--   jobs                 how many jobs have it now.
-- report_oldest_pending: one row per priority.
--   priority;
--   pending              pending jobs of that priority (ready and waiting for a retry);
--   ready                of those, the ones a worker may claim now;
--   oldest_created_at    submit time of the oldest pending job (NULL when none);
--   oldest_age_s         its age in seconds.
-- report_throughput: one row per minute of the window that saw any event.
--   minute               the minute (timestamptz, truncated);
--   completed, error     jobs that finished so in that minute;
--   retried              failed attempts that were scheduled for another try;
--   timed_out            attempts that ran past their timeout (they end in error).
-- report_latency: one row per priority, over jobs that finished (completed or error) in the
--   window after running. Percentiles are continuous (percentile_cont), in seconds.
--   priority, jobs;
--   wait_p50_s, wait_p95_s, wait_p99_s   queue wait of the final attempt: from the time it
--                        became claimable (its submit, or its retry's time) to its claim;
--   run_p50_s, run_p95_s, run_p99_s      run time of the final attempt: claim to finish.
-- report_top_failures: the 50 most frequent attempt failure messages in the window.
--   message              the message (engine and handler messages; never a prompt);
--   attempts             failed attempts with that message;
--   jobs                 distinct jobs they belong to;
--   retried              of those attempts, how many were retried;
--   last_at              the latest of them.
-- report_retries: jobs of the window (unfinished, or finished in it) that failed at least one
--   attempt, most retries first.
--   job_id, conversation_id, batch_id, kind, priority, status;
--   retry_count, max_retries, attempts (claims so far);
--   last_error_at, last_error   the latest failed attempt.
-- report_conversations: one row per conversation with jobs in the window.
--   conversation_id, jobs, pending, running, completed, error, cancelled;
--   first_created_at, last_finished_at.
-- report_batches: one row per batch with jobs in the window.
--   batch_id, conversation_id, created_at, job_count (as submitted);
--   pending, running, completed, error, cancelled (its jobs still in the table);
--   done_fraction        finished jobs / job_count;
--   finished_at          when its last job finished (NULL while any is unfinished).
-- report_workers: every registered worker process.
--   worker_id, host, pid, concurrency, kinds, started_at, last_seen_at, stopped_at;
--   state                'live', 'stopped' (shut down cleanly) or 'dead' (no heartbeat for
--                        `imagejobs.report_dead_after`, default 60 s: the lease);
--   seen_s_ago           seconds since its last heartbeat;
--   running_jobs         jobs it holds now.
--
-- Caveats: the views read the live tables; on a busy primary, point reporting at a read
-- replica. `report_queue_depth` counts every row (finished ones too), so its cost grows with
-- the history retention keeps. The reporting role loses its direct table rights here; the
-- down migration gives them back.

CREATE FUNCTION report_window_start() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT now() - coalesce(nullif(current_setting('imagejobs.report_window', true), '')::interval,
                            interval '1 hour')
$$;

CREATE FUNCTION report_dead_after() RETURNS interval LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('imagejobs.report_dead_after', true), '')::interval,
                    interval '60 seconds')
$$;

-- The jobs a window is about: unfinished ones and those finished in it. Each part is served by
-- an index (jobs_claim, jobs_running, jobs_finished). Not granted to anyone: a building block.
CREATE VIEW report_window_jobs AS
    SELECT * FROM jobs WHERE status = 'pending'
    UNION ALL
    SELECT * FROM jobs WHERE status = 'running'
    UNION ALL
    SELECT * FROM jobs WHERE finished_at >= report_window_start();

-- Every failed attempt of the window's jobs, one row each.
CREATE VIEW report_attempt_errors AS
    SELECT j.id AS job_id, j.priority,
           (e->>'attempt')::int AS attempt,
           (e->>'at')::timestamptz AS at,
           e->>'message' AS message,
           coalesce((e->>'retried')::boolean,
                    NOT (j.status = 'error' AND (e->>'attempt')::int = j.attempt)) AS retried,
           coalesce((e->>'timed_out')::boolean, (e->>'message') LIKE 'timed out after %') AS timed_out
    FROM report_window_jobs j, jsonb_array_elements(j.errors) AS e
    WHERE j.errors <> '[]'::jsonb AND (e->>'at')::timestamptz >= report_window_start();

CREATE VIEW report_queue_depth AS
    SELECT s.status, p.priority, coalesce(c.jobs, 0) AS jobs
    FROM unnest(enum_range(NULL::job_status)) AS s(status)
    CROSS JOIN unnest(enum_range(NULL::job_priority)) AS p(priority)
    LEFT JOIN (SELECT status, priority, count(*) AS jobs FROM jobs GROUP BY status, priority) c
           ON c.status = s.status AND c.priority = p.priority
    ORDER BY s.status, p.priority;

CREATE VIEW report_oldest_pending AS
    SELECT p.priority,
           count(j.id) AS pending,
           count(j.id) FILTER (WHERE j.next_attempt_at <= now()) AS ready,
           min(j.created_at) AS oldest_created_at,
           round(extract(epoch FROM now() - min(j.created_at))::numeric, 3) AS oldest_age_s
    FROM unnest(enum_range(NULL::job_priority)) AS p(priority)
    LEFT JOIN jobs j ON j.status = 'pending' AND j.priority = p.priority
    GROUP BY p.priority
    ORDER BY p.priority;

CREATE VIEW report_throughput AS
    SELECT minute,
           count(*) FILTER (WHERE event = 'completed') AS completed,
           count(*) FILTER (WHERE event = 'error') AS error,
           count(*) FILTER (WHERE event = 'retried') AS retried,
           count(*) FILTER (WHERE event = 'timed_out') AS timed_out
    FROM (
        SELECT date_trunc('minute', finished_at) AS minute, status::text AS event
        FROM jobs
        WHERE finished_at >= report_window_start() AND status IN ('completed', 'error')
        UNION ALL
        SELECT date_trunc('minute', at), 'retried' FROM report_attempt_errors WHERE retried
        UNION ALL
        SELECT date_trunc('minute', at), 'timed_out' FROM report_attempt_errors WHERE timed_out
    ) events
    GROUP BY minute
    ORDER BY minute;

CREATE VIEW report_latency AS
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
        FROM jobs
        WHERE finished_at >= report_window_start() AND status IN ('completed', 'error')
          AND started_at IS NOT NULL
    ) finished
    GROUP BY priority
    ORDER BY priority;

CREATE VIEW report_top_failures AS
    SELECT message, count(*) AS attempts, count(DISTINCT job_id) AS jobs,
           count(*) FILTER (WHERE retried) AS retried, max(at) AS last_at
    FROM report_attempt_errors
    GROUP BY message
    ORDER BY attempts DESC, message
    LIMIT 50;

CREATE VIEW report_retries AS
    SELECT j.id AS job_id, j.conversation_id, j.batch_id, j.kind, j.priority, j.status,
           j.retry_count, j.max_retries, j.attempt AS attempts,
           (j.errors->-1->>'at')::timestamptz AS last_error_at,
           j.errors->-1->>'message' AS last_error
    FROM report_window_jobs j
    WHERE j.errors <> '[]'::jsonb
    ORDER BY j.retry_count DESC, last_error_at DESC;

CREATE VIEW report_conversations AS
    SELECT conversation_id, count(*) AS jobs,
           count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'running') AS running,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'error') AS error,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           min(created_at) AS first_created_at, max(finished_at) AS last_finished_at
    FROM report_window_jobs
    GROUP BY conversation_id
    ORDER BY max(coalesce(finished_at, created_at)) DESC;

CREATE VIEW report_batches AS
    SELECT b.id AS batch_id, b.conversation_id, b.created_at, b.job_count,
           count(*) FILTER (WHERE j.status = 'pending') AS pending,
           count(*) FILTER (WHERE j.status = 'running') AS running,
           count(*) FILTER (WHERE j.status = 'completed') AS completed,
           count(*) FILTER (WHERE j.status = 'error') AS error,
           count(*) FILTER (WHERE j.status = 'cancelled') AS cancelled,
           round(count(*) FILTER (WHERE j.finished_at IS NOT NULL)::numeric / b.job_count, 4) AS done_fraction,
           CASE WHEN bool_and(j.finished_at IS NOT NULL) THEN max(j.finished_at) END AS finished_at
    FROM batches b
    JOIN jobs j ON j.batch_id = b.id
    WHERE b.id IN (SELECT batch_id FROM report_window_jobs WHERE batch_id IS NOT NULL)
    GROUP BY b.id
    ORDER BY b.created_at DESC;

CREATE VIEW report_workers AS
    SELECT w.id AS worker_id, w.host, w.pid, w.concurrency, w.kinds, w.started_at, w.last_seen_at,
           w.stopped_at,
           CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
                WHEN now() - w.last_seen_at > report_dead_after() THEN 'dead'
                ELSE 'live' END AS state,
           round(extract(epoch FROM now() - w.last_seen_at)::numeric, 3) AS seen_s_ago,
           (SELECT count(*) FROM jobs j WHERE j.status = 'running' AND j.worker_id = w.id) AS running_jobs
    FROM workers w
    ORDER BY (w.stopped_at IS NULL) DESC, w.last_seen_at DESC;

-- The reporting role reads the views and nothing else.
REVOKE SELECT ON jobs, batches, workers, job_counts_second, job_counts_minute, job_results FROM imagejobs_reporter;
REVOKE SELECT (id, seq, conversation_id, batch_id, kind, priority, status, retry_count, max_retries,
               next_attempt_at, timeout, attempt, worker_id, created_at, started_at, heartbeat_at,
               deadline_at, finished_at, error_message, errors) ON jobs FROM imagejobs_reporter;
REVOKE SELECT (job_id, content_type, width, height, byte_size, sha256, backend, generation_ms, created_at)
    ON job_results FROM imagejobs_reporter;
GRANT SELECT ON report_queue_depth, report_oldest_pending, report_throughput, report_latency,
                report_top_failures, report_retries, report_conversations, report_batches,
                report_workers
    TO imagejobs_reporter;
