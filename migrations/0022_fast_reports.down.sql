-- 0022 fast_reports, reverted: the reporting views read every job again, as they did before
-- (0006's definitions with 0012's column names), and the two indexes go. The `capped` columns
-- stay, always false: a view cannot lose a column without being dropped, and dropping would
-- break operators' views built on these.

CREATE OR REPLACE VIEW report_attempt_errors AS
    SELECT j.id AS job_id, j.priority,
           (e->>'attempt')::int AS attempt,
           (e->>'at')::timestamptz AS at,
           e->>'message' AS message,
           coalesce((e->>'retried')::boolean,
                    NOT (j.status = 'error' AND (e->>'attempt')::int = j.attempt)) AS retried,
           coalesce((e->>'timed_out')::boolean, (e->>'message') LIKE 'timed out after %') AS timed_out
    FROM report_window_jobs j, jsonb_array_elements(j.errors) AS e
    WHERE j.errors <> '[]'::jsonb AND (e->>'at')::timestamptz >= report_window_start();

CREATE OR REPLACE VIEW report_retries AS
    SELECT j.id AS job_id, j.conversation_id, j.batch_id, j.kind, j.priority, j.status,
           j.retry_count, j.max_retries, j.attempt AS attempts,
           (j.errors->-1->>'at')::timestamptz AS last_error_at,
           j.errors->-1->>'message' AS last_error
    FROM report_window_jobs j
    WHERE j.errors <> '[]'::jsonb
    ORDER BY j.retry_count DESC, last_error_at DESC;

CREATE OR REPLACE VIEW report_queue_depth AS
 SELECT s.status,
    p.priority,
    COALESCE(c.jobs, 0::bigint) AS jobs,
    false AS capped
   FROM unnest(enum_range(NULL::job_status)) s(status)
     CROSS JOIN unnest(enum_range(NULL::job_priority)) p(priority)
     LEFT JOIN ( SELECT jobs.status,
            jobs.priority,
            count(*) AS jobs
           FROM jobs
          GROUP BY jobs.status, jobs.priority) c ON c.status = s.status AND c.priority = p.priority
  ORDER BY s.status, p.priority;

CREATE OR REPLACE VIEW report_oldest_pending AS
 SELECT p.priority,
    count(j.id) AS pending,
    count(j.id) FILTER (WHERE j.next_attempt_at <= now()) AS ready,
    min(j.created_at) AS oldest_created_at,
    round(EXTRACT(epoch FROM now() - min(j.created_at)), 3) AS oldest_age_s,
    false AS capped
   FROM unnest(enum_range(NULL::job_priority)) p(priority)
     LEFT JOIN jobs j ON j.status = 'pending'::job_status AND j.priority = p.priority
  GROUP BY p.priority
  ORDER BY p.priority;

CREATE OR REPLACE VIEW report_throughput AS
 SELECT events.minute,
    count(*) FILTER (WHERE events.event = 'completed'::text) AS completed,
    count(*) FILTER (WHERE events.event = 'error'::text) AS error,
    count(*) FILTER (WHERE events.event = 'retried'::text) AS retried,
    count(*) FILTER (WHERE events.event = 'timed_out'::text) AS timed_out
   FROM ( SELECT date_trunc('minute'::text, jobs.finished_at) AS minute,
            jobs.status::text AS event
           FROM jobs
          WHERE jobs.finished_at >= report_window_start() AND (jobs.status = ANY (ARRAY['completed'::job_status, 'error'::job_status]))
        UNION ALL
         SELECT date_trunc('minute'::text, report_attempt_errors.at) AS date_trunc,
            'retried'::text AS text
           FROM report_attempt_errors
          WHERE report_attempt_errors.retried
        UNION ALL
         SELECT date_trunc('minute'::text, report_attempt_errors.at) AS date_trunc,
            'timed_out'::text AS text
           FROM report_attempt_errors
          WHERE report_attempt_errors.timed_out) events
  GROUP BY events.minute
  ORDER BY events.minute;

CREATE OR REPLACE VIEW report_latency AS
 SELECT finished.priority,
    count(*) AS jobs,
    percentile_cont(0.50::double precision) WITHIN GROUP (ORDER BY finished.wait_s) AS wait_p50_s,
    percentile_cont(0.95::double precision) WITHIN GROUP (ORDER BY finished.wait_s) AS wait_p95_s,
    percentile_cont(0.99::double precision) WITHIN GROUP (ORDER BY finished.wait_s) AS wait_p99_s,
    percentile_cont(0.50::double precision) WITHIN GROUP (ORDER BY finished.run_s) AS run_p50_s,
    percentile_cont(0.95::double precision) WITHIN GROUP (ORDER BY finished.run_s) AS run_p95_s,
    percentile_cont(0.99::double precision) WITHIN GROUP (ORDER BY finished.run_s) AS run_p99_s
   FROM ( SELECT jobs.priority,
            GREATEST(0::numeric, EXTRACT(epoch FROM jobs.started_at - LEAST(jobs.next_attempt_at, jobs.started_at)))::double precision AS wait_s,
            EXTRACT(epoch FROM jobs.finished_at - jobs.started_at)::double precision AS run_s
           FROM jobs
          WHERE jobs.finished_at >= report_window_start() AND (jobs.status = ANY (ARRAY['completed'::job_status, 'error'::job_status])) AND jobs.started_at IS NOT NULL) finished
  GROUP BY finished.priority
  ORDER BY finished.priority;

CREATE OR REPLACE VIEW report_conversations AS
 SELECT report_window_jobs.conversation_id,
    count(*) AS jobs,
    count(*) FILTER (WHERE report_window_jobs.status = 'pending'::job_status) AS pending,
    count(*) FILTER (WHERE report_window_jobs.status = 'running'::job_status) AS running,
    count(*) FILTER (WHERE report_window_jobs.status = 'completed'::job_status) AS completed,
    count(*) FILTER (WHERE report_window_jobs.status = 'error'::job_status) AS error,
    count(*) FILTER (WHERE report_window_jobs.status = 'cancelled'::job_status) AS cancelled,
    min(report_window_jobs.created_at) AS first_created_at,
    max(report_window_jobs.finished_at) AS last_finished_at,
    false AS capped
   FROM report_window_jobs
  GROUP BY report_window_jobs.conversation_id
  ORDER BY (max(COALESCE(report_window_jobs.finished_at, report_window_jobs.created_at))) DESC;

CREATE OR REPLACE VIEW report_batches AS
 SELECT b.id AS batch_id,
    b.group_id AS conversation_id,
    b.created_at,
    b.job_count,
    count(*) FILTER (WHERE j.status = 'pending'::job_status) AS pending,
    count(*) FILTER (WHERE j.status = 'running'::job_status) AS running,
    count(*) FILTER (WHERE j.status = 'completed'::job_status) AS completed,
    count(*) FILTER (WHERE j.status = 'error'::job_status) AS error,
    count(*) FILTER (WHERE j.status = 'cancelled'::job_status) AS cancelled,
    round(count(*) FILTER (WHERE j.finished_at IS NOT NULL)::numeric / b.job_count::numeric, 4) AS done_fraction,
        CASE
            WHEN bool_and(j.finished_at IS NOT NULL) THEN max(j.finished_at)
            ELSE NULL::timestamp with time zone
        END AS finished_at
   FROM batches b
     JOIN jobs j ON j.batch_id = b.id
  WHERE (b.id IN ( SELECT report_window_jobs.batch_id
           FROM report_window_jobs
          WHERE report_window_jobs.batch_id IS NOT NULL))
  GROUP BY b.id
  ORDER BY b.created_at DESC;

DROP VIEW report_window_failed_jobs, report_pending_counts;
DROP INDEX IF EXISTS jobs_failed_attempts;
DROP INDEX IF EXISTS jobs_pending_age;
