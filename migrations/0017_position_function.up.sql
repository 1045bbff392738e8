-- 0017 position_function
--
-- What it does: a job's queue position (and why it waits, when it does) becomes one function,
-- `job_position(job_id)`, which the library calls and any SQL client may call too. It runs its
-- statement with a generic plan, always: with the default plan choice PostgreSQL planned the
-- position statement afresh on most calls once a million jobs were pending (planning took
-- 1.3 ms, ten times the statement's execution), since its estimate of a plan for the one id
-- came out no costlier than the generic plan's. The plan is the same either way.
--
-- Caveats: none; nothing is rewritten.

-- The claimable jobs ahead of a job in claim order (`priority, tag, seq`), from folded hour,
-- minute and second counts of tags, the exact count in the job's own second, minus retries
-- ahead that still wait out their backoff; the completion rate over the last minute; and, for
-- a pending job not simply queued, `job_wait`'s reason and time. No row for an unknown id; a
-- NULL position for a job that is not claimable (not pending, or waiting at a gate).
CREATE FUNCTION job_position(job_id uuid)
RETURNS TABLE (status job_status, "position" bigint, ahead_higher bigint, per_second float8,
               wait_reason text, wait_until timestamptz)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    may_wait boolean;
BEGIN
    WITH me AS (
        SELECT id, status, priority, tag, seq, next_attempt_at, date_trunc('second', tag) AS sec,
               date_trunc('minute', tag) AS min, date_trunc('hour', tag) AS hr
        FROM jobs WHERE id = job_id
    ), hours AS (
        SELECT coalesce(sum(c.n) FILTER (WHERE c.priority < me.priority), 0) AS higher,
               coalesce(sum(c.n) FILTER (WHERE c.priority = me.priority), 0) AS same
        FROM me JOIN job_counts_hour c
          ON c.metric = 0 AND (c.priority < me.priority OR (c.priority = me.priority AND c.hour < me.hr))
    ), minutes AS (
        SELECT coalesce(sum(c.n), 0) AS same
        FROM me JOIN job_counts_minute c
          ON c.metric = 0 AND c.priority = me.priority AND c.minute >= me.hr AND c.minute < me.min
    ), seconds AS (
        SELECT coalesce(sum(c.n), 0) AS same
        FROM me JOIN job_counts_second c
          ON c.metric = 0 AND c.priority = me.priority AND c.second >= me.min AND c.second < me.sec
    ), deltas AS (
        SELECT coalesce(sum(d.n) FILTER (WHERE d.priority < me.priority), 0) AS higher,
               coalesce(sum(d.n) FILTER (WHERE d.priority = me.priority), 0) AS same
        FROM me JOIN job_count_deltas d
          ON d.metric = 0 AND (d.priority < me.priority OR (d.priority = me.priority AND d.second < me.sec))
    ), exact AS (
        SELECT count(*) AS same
        FROM me JOIN jobs j
          ON j.status = 'pending' AND j.tag IS NOT NULL AND j.priority = me.priority AND j.tag >= me.sec
         AND (j.tag, j.seq) < (me.tag, me.seq)
    ), waiting AS (
        SELECT count(*) FILTER (WHERE j.priority < me.priority) AS higher, count(*) AS total
        FROM me JOIN jobs j
          ON j.status = 'pending' AND j.retry_count > 0 AND j.next_attempt_at > now() AND j.tag IS NOT NULL
         AND (j.priority, j.tag, j.seq) < (me.priority, me.tag, me.seq)
    ), recent AS (
        SELECT second, n FROM job_counts_second WHERE metric = 1 AND second >= now() - interval '60 seconds'
        UNION ALL
        SELECT second, n FROM job_count_deltas WHERE metric = 1 AND second >= now() - interval '60 seconds'
    ), rate AS (
        -- Completions per second over the last minute, or over the time since the first
        -- completion in it when that is shorter (a queue that just started).
        SELECT coalesce(sum(n), 0)::float8
               / greatest(1, extract(epoch FROM now() - coalesce(min(second), now())))::float8 AS per_second
        FROM recent
    )
    SELECT me.status,
           CASE WHEN me.tag IS NOT NULL THEN
               (hours.higher + hours.same + minutes.same + seconds.same + deltas.higher + deltas.same + exact.same - waiting.total)::bigint
           END,
           CASE WHEN me.tag IS NOT NULL THEN (hours.higher + deltas.higher - waiting.higher)::bigint END,
           rate.per_second,
           me.status = 'pending' AND (me.tag IS NULL OR me.next_attempt_at > now() OR EXISTS (SELECT 1 FROM job_pauses))
    INTO status, "position", ahead_higher, per_second, may_wait
    FROM me, hours, minutes, seconds, deltas, exact, waiting, rate;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF may_wait THEN
        SELECT w.reason, w.until INTO wait_reason, wait_until FROM job_wait(job_id) w;
    END IF;
    RETURN NEXT;
END
$$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION job_position(uuid) SET search_path = %I, pg_temp', current_schema());
END
$$;
REVOKE ALL ON FUNCTION job_position(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION job_position(uuid) TO imagejobs_client;
