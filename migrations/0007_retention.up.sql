-- 0007 retention
--
-- What it does: adds `prune_finished(older_than, max_rows, dry_run)`, which deletes finished
-- jobs (completed, error, cancelled) whose `finished_at` is older than `older_than`, with their
-- stored images (by cascade), then batches none of whose jobs remain, then worker registry rows
-- not seen for that long. One call deletes at most `max_rows` of each, oldest first, skipping
-- rows another transaction holds, so a caller pages through a large backlog in short
-- transactions that never block claims, submits or completions. It returns what it deleted
-- (with `dry_run`, what a full prune would delete, and deletes nothing).
-- Pending and running jobs are never pruned: they have no `finished_at`.
-- It runs as its owner (SECURITY DEFINER, search_path pinned), so the worker role (whose sweep
-- prunes) needs no DELETE right on any table; only the owner and the worker role may call it.
--
-- Caveats: an age must be positive and `max_rows` 1–100000; anything else is refused (22023).
-- Deleted rows leave dead tuples for autovacuum; pruning often in small pages keeps that steady.

CREATE FUNCTION prune_finished(older_than interval, max_rows integer, dry_run boolean DEFAULT false)
RETURNS TABLE (jobs bigint, images bigint, batches bigint, workers bigint)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    cutoff timestamptz;
BEGIN
    IF older_than IS NULL OR older_than <= interval '0' THEN
        RAISE EXCEPTION 'retention age must be positive (got %)', coalesce(older_than::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'pass an age such as ''7 days''';
    END IF;
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 100000 (got %)', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    cutoff := now() - older_than;
    IF dry_run THEN
        RETURN QUERY SELECT
            (SELECT count(*) FROM jobs j WHERE j.finished_at < cutoff),
            (SELECT count(*) FROM job_results r JOIN jobs j ON j.id = r.job_id WHERE j.finished_at < cutoff),
            (SELECT count(*) FROM batches b WHERE b.created_at < cutoff
                AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id
                                AND (j.finished_at IS NULL OR j.finished_at >= cutoff))),
            (SELECT count(*) FROM workers w WHERE w.last_seen_at < cutoff);
        RETURN;
    END IF;

    jobs := 0; images := 0; batches := 0; workers := 0;
    WITH doomed AS MATERIALIZED (
        SELECT j.id FROM jobs j
        WHERE j.finished_at < cutoff
        ORDER BY j.finished_at
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), stored AS (
        SELECT count(*) AS n FROM job_results r JOIN doomed d ON r.job_id = d.id
    ), gone AS (
        DELETE FROM jobs j USING doomed d WHERE j.id = d.id RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone), (SELECT n FROM stored) INTO jobs, images;

    WITH empty AS MATERIALIZED (
        SELECT b.id FROM batches b
        WHERE b.created_at < cutoff AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id)
        ORDER BY b.created_at
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM batches b USING empty e WHERE b.id = e.id RETURNING 1
    )
    SELECT count(*) FROM gone INTO batches;

    WITH idle AS MATERIALIZED (
        SELECT w.id FROM workers w
        WHERE w.last_seen_at < cutoff
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM workers w USING idle i WHERE w.id = i.id RETURNING 1
    )
    SELECT count(*) FROM gone INTO workers;
    RETURN NEXT;
END
$$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION prune_finished(interval, integer, boolean) SET search_path = %I, pg_temp', current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION prune_finished(interval, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prune_finished(interval, integer, boolean) TO imagejobs_worker;
