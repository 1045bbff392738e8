-- 0002 queue_position_counts
--
-- What it does: keeps pending-job counts per priority and creation second so that a job's
-- queue position costs a few index lookups instead of a count over every job ahead of it.
--
-- * Statement-level triggers on `jobs` append one row per (priority, second) to
--   `job_count_deltas` whenever a statement makes jobs pending or moves them out of pending
--   (metric 0), and when jobs complete (metric 1, by finish second, for the ETA and reports).
--   Appending never updates a shared row, so submitters and claimers never wait on a counter.
-- * The maintenance sweep folds the deltas into `job_counts_second` and `job_counts_minute`
--   (one statement, so readers see either the deltas or the folded counts, never both).
-- * The position query sums whole minutes, then whole seconds inside the job's minute, then
--   counts the job's own second exactly, and subtracts retries ahead of it that wait out a
--   backoff.
--
-- Caveats: the triggers add one small INSERT to each statement that changes a job's status.
-- Anyone changing `jobs` by hand keeps the counts right: the triggers see every statement.

CREATE TABLE job_count_deltas (
    metric   smallint NOT NULL,            -- 0 pending jobs by created second, 1 completions by finished second
    priority job_priority NOT NULL,
    second   timestamptz NOT NULL,
    n        integer NOT NULL
);

CREATE TABLE job_counts_second (
    metric   smallint NOT NULL,
    priority job_priority NOT NULL,
    second   timestamptz NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (metric, priority, second)
);

CREATE TABLE job_counts_minute (
    metric   smallint NOT NULL,
    priority job_priority NOT NULL,
    minute   timestamptz NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (metric, priority, minute)
);

CREATE FUNCTION jobs_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 0, priority, date_trunc('second', created_at), count(*)
    FROM new_rows WHERE status = 'pending'
    GROUP BY 2, 3;
    RETURN NULL;
END
$$;

CREATE FUNCTION jobs_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 0, priority, second, sum(n)
    FROM (
        SELECT priority, date_trunc('second', created_at) AS second, 1 AS n
        FROM new_rows WHERE status = 'pending'
        UNION ALL
        SELECT priority, date_trunc('second', created_at), -1
        FROM old_rows WHERE status = 'pending'
    ) changes
    GROUP BY 2, 3
    HAVING sum(n) <> 0;

    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 1, n.priority, date_trunc('second', n.finished_at), count(*)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status = 'completed' AND o.status <> 'completed'
    GROUP BY 2, 3;
    RETURN NULL;
END
$$;

CREATE FUNCTION jobs_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 0, priority, date_trunc('second', created_at), -count(*)
    FROM old_rows WHERE status = 'pending'
    GROUP BY 2, 3;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_inserted();

CREATE TRIGGER jobs_count_updated AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_updated();

CREATE TRIGGER jobs_count_deleted AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_deleted();

-- Jobs that existed before this migration.
INSERT INTO job_count_deltas (metric, priority, second, n)
SELECT 0, priority, date_trunc('second', created_at), count(*)
FROM jobs WHERE status = 'pending'
GROUP BY 2, 3;
