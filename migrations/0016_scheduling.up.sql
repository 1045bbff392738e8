-- 0016 scheduling
--
-- What it does: fair share across groups (the image product's conversations), delayed jobs,
-- per-group caps, rate limits per kind, pause and resume, and batch completion, with the
-- queue position still an exact count in claim order.
--
-- * Claim order becomes `priority, tag, seq`. A job's `tag` is a virtual start time set when
--   it becomes claimable. With fair share on (the default, `job_settings.fair_share`), a
--   group's next job is tagged `max(V + phase(group) · turn, last tag of the group + turn /
--   weight)`, where V is the tag at the head of the queue for that priority (read, never
--   written), `turn` is the length of one turn (10 s of virtual time) and the phase, from a
--   hash of the group, spreads the groups of one round over the turn so that position counts
--   stay small. An idle group gets no saved-up credit; a group alone is served oldest first.
--   With fair share off, the tag is the time the job became due: strict oldest-first.
-- * A pending job with no tag waits at a gate: its `run_at` (`next_attempt_at`) is ahead, a cap
--   or rate limit applies to it, or it is newly re-queued. `admit_jobs()`, run by one elected
--   process about ten times a second, tags the waiting jobs whose gates are open: due, under
--   their group's cap (running + claimable jobs of that group and kind), within their kind's
--   rate (starts in the last period + claimable jobs, counted in `job_rate_tokens`), kind not
--   paused; groups take turns for the cap and the tokens. Claims never look at limits, so
--   they stay one index scan with SKIP LOCKED and no claimer waits for another.
-- * Limits live in `job_limits`: one row for the queue-wide default (kind and group NULL), one
--   per kind, one per group (a group's row applies to all its kinds): `per_group` (cap on
--   running jobs of one group and kind; the narrowest scope that sets it wins), `rate_count`
--   per `rate_period` (kinds only), `weight` (kinds and groups: a larger share of turns).
-- * Paused kinds are in `job_pauses` ('*' pauses every kind): claims skip them at once, their
--   jobs keep their tags (their place); waiting jobs of a paused kind are not admitted.
-- * Queue-position counts are kept by tag instead of creation time, over claimable jobs only
--   (pending with a tag), with an hour level above minutes and seconds.
-- * A batch counts its finished jobs (`finished_jobs`, fed through `batch_events` by the count
--   trigger so no completion waits on the batch row); `admit_jobs()` folds them and, when the
--   last job of a batch finishes, sets `batches.finished_at` and notifies
--   `imagejobs.<schema>.batches` with the batch id.
--
-- Caveats: rewrites the pending rows (their tag) and rebuilds the claim index; run it when the
-- queue is quiet. Jobs inserted by hand without a tag are claimable once the admitter tags them
-- (within about 100 ms while any worker or `imagejobs maintain` runs).

CREATE TABLE job_settings (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    fair_share boolean NOT NULL DEFAULT true,
    -- The virtual time one turn of one group takes; only its ratio to the position buckets
    -- (a second, a minute, an hour) matters.
    turn       interval NOT NULL DEFAULT interval '10 seconds' CHECK (turn >= interval '1 second')
);
INSERT INTO job_settings DEFAULT VALUES;

CREATE TABLE job_limits (
    kind        text,
    group_id    uuid,
    per_group   integer CHECK (per_group BETWEEN 1 AND 100000),
    rate_count  integer CHECK (rate_count BETWEEN 1 AND 1000000),
    rate_period interval CHECK (rate_period BETWEEN interval '1 second' AND interval '1 day'),
    weight      double precision CHECK (weight BETWEEN 0.01 AND 100),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_limits_scope UNIQUE NULLS NOT DISTINCT (kind, group_id),
    CONSTRAINT job_limits_one_scope CHECK (kind IS NULL OR group_id IS NULL),
    CONSTRAINT job_limits_rate_per_kind CHECK (rate_count IS NULL OR kind IS NOT NULL),
    CONSTRAINT job_limits_rate_whole CHECK ((rate_count IS NULL) = (rate_period IS NULL))
);

CREATE TABLE job_pauses (
    kind      text PRIMARY KEY,   -- '*' pauses every kind
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- One row per admission of a rate-limited job: unstarted while it waits to be claimed, then
-- stamped with its start by the count trigger, and dropped once older than the kind's period.
CREATE TABLE job_rate_tokens (
    kind        text NOT NULL,
    job_id      uuid NOT NULL,
    admitted_at timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz
);
CREATE INDEX job_rate_tokens_kind ON job_rate_tokens (kind, started_at);
CREATE INDEX job_rate_tokens_unstarted ON job_rate_tokens (job_id) WHERE started_at IS NULL;

ALTER TABLE batches ADD COLUMN finished_jobs integer NOT NULL DEFAULT 0,
                    ADD COLUMN finished_at timestamptz;
UPDATE batches b SET finished_jobs = f.n,
                     finished_at = CASE WHEN f.n >= b.job_count THEN f.last END
FROM (SELECT batch_id, count(*) AS n, max(finished_at) AS last
      FROM jobs WHERE batch_id IS NOT NULL AND status IN ('completed', 'error', 'cancelled') GROUP BY batch_id) f
WHERE f.batch_id = b.id;

-- Jobs of a batch entering (+) or leaving (−) a final state, appended by the count trigger and
-- folded into `batches.finished_jobs` by `admit_jobs()`.
CREATE TABLE batch_events (
    batch_id uuid NOT NULL,
    n        integer NOT NULL
);

ALTER TABLE jobs ADD COLUMN tag timestamptz;
UPDATE jobs SET tag = created_at WHERE status = 'pending';

DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (priority, tag, seq) WHERE status = 'pending' AND tag IS NOT NULL;
-- Waiting jobs by due time: what the admitter looks at.
CREATE INDEX jobs_gated ON jobs (next_attempt_at) WHERE status = 'pending' AND tag IS NULL;
-- A group's claimable jobs: its last tag, and its claimable count for the cap.
CREATE INDEX jobs_group_queue ON jobs (group_id, priority, tag) WHERE status = 'pending' AND tag IS NOT NULL;

CREATE TABLE job_counts_hour (
    metric   smallint NOT NULL,
    priority job_priority NOT NULL,
    hour     timestamptz NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (metric, priority, hour)
);

-- Pending counts (metric 0) are now by tag; rebuild them. Completion counts (metric 1) stay.
DELETE FROM job_count_deltas WHERE metric = 0;
DELETE FROM job_counts_second WHERE metric = 0;
DELETE FROM job_counts_minute WHERE metric = 0;
INSERT INTO job_counts_second (metric, priority, second, n)
SELECT 0, priority, date_trunc('second', tag), count(*) FROM jobs WHERE status = 'pending' AND tag IS NOT NULL GROUP BY 2, 3;
INSERT INTO job_counts_minute (metric, priority, minute, n)
SELECT 0, priority, date_trunc('minute', second), sum(n) FROM job_counts_second WHERE metric = 0 GROUP BY 2, 3;
INSERT INTO job_counts_hour (metric, priority, hour, n)
SELECT metric, priority, date_trunc('hour', minute), sum(n) FROM job_counts_minute GROUP BY 1, 2, 3;

CREATE OR REPLACE FUNCTION jobs_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 0, priority, date_trunc('second', tag), count(*)
    FROM new_rows WHERE status = 'pending' AND tag IS NOT NULL
    GROUP BY 2, 3;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION jobs_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 0, priority, second, sum(n)
    FROM (
        SELECT priority, date_trunc('second', tag) AS second, 1 AS n
        FROM new_rows WHERE status = 'pending' AND tag IS NOT NULL
        UNION ALL
        SELECT priority, date_trunc('second', tag), -1
        FROM old_rows WHERE status = 'pending' AND tag IS NOT NULL
    ) changes
    GROUP BY 2, 3
    HAVING sum(n) <> 0;

    WITH changed AS MATERIALIZED (
        SELECT n.id, n.batch_id, n.priority, n.finished_at, n.started_at, n.status, o.status AS old_status
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status <> o.status
    ), completions AS (
        INSERT INTO job_count_deltas (metric, priority, second, n)
        SELECT 1, priority, date_trunc('second', finished_at), count(*)
        FROM changed WHERE status = 'completed'
        GROUP BY 2, 3
    )
    INSERT INTO batch_events (batch_id, n)
    SELECT batch_id, sum(CASE WHEN status IN ('completed', 'error', 'cancelled') THEN 1 ELSE 0 END
                         - CASE WHEN old_status IN ('completed', 'error', 'cancelled') THEN 1 ELSE 0 END)
    FROM changed WHERE batch_id IS NOT NULL
    GROUP BY batch_id
    HAVING sum(CASE WHEN status IN ('completed', 'error', 'cancelled') THEN 1 ELSE 0 END
               - CASE WHEN old_status IN ('completed', 'error', 'cancelled') THEN 1 ELSE 0 END) <> 0;

    -- A rate-limited job's token is spent when it starts (looked for only while a token waits,
    -- so claims of other kinds pay one index probe).
    IF EXISTS (SELECT 1 FROM job_rate_tokens WHERE started_at IS NULL) THEN
        UPDATE job_rate_tokens t SET started_at = n.started_at
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status = 'running' AND o.status <> 'running' AND t.job_id = n.id AND t.started_at IS NULL;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION jobs_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 0, priority, date_trunc('second', tag), -count(*)
    FROM old_rows WHERE status = 'pending' AND tag IS NOT NULL
    GROUP BY 2, 3;
    RETURN NULL;
END
$$;

-- A group's place within a turn, in [0, 1): the same for all its jobs.
CREATE FUNCTION job_group_phase(g uuid) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (hashtext(g::text)::bigint + 2147483648) / 4294967296.0
$$;

-- The place a group's next job of a kind takes in a priority if it became claimable now:
-- `tag`, the fair tag (see the header) or, with fair share off, the submit time (or the tail of
-- the queue if fair tags queued earlier run past it, so a new job never lands ahead of older
-- ones); `step`, what each further job of the group adds (the turn over the group's and the
-- kind's weights; zero with fair share off: a batch's jobs share one tag, in submission order);
-- `gated`, whether a cap or rate limit applies, so such jobs wait for the admitter instead.
-- Written as one SELECT returning a row so that PostgreSQL inlines it into the calling
-- statement and plans it with it (a PL/pgSQL function costs a submit tens of microseconds
-- per transaction); call it in FROM.
CREATE FUNCTION job_tags(g uuid, p job_priority, k text)
RETURNS TABLE (tag timestamptz, step interval, gated boolean)
LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT CASE WHEN s.fair_share THEN greatest(
                    coalesce((SELECT j.tag FROM jobs j
                              WHERE j.status = 'pending' AND j.tag IS NOT NULL AND j.priority = p AND j.next_attempt_at <= now()
                              ORDER BY j.priority, j.tag, j.seq LIMIT 1), now()) + s.turn * job_group_phase(g),
                    (SELECT j.tag FROM jobs j
                     WHERE j.status = 'pending' AND j.tag IS NOT NULL AND j.group_id = g AND j.priority = p
                     ORDER BY j.group_id DESC, j.priority DESC, j.tag DESC LIMIT 1) + s.turn / l.weight)
                ELSE greatest(now(), (SELECT j.tag FROM jobs j
                                      WHERE j.status = 'pending' AND j.tag IS NOT NULL AND j.priority = p
                                      ORDER BY j.priority DESC, j.tag DESC, j.seq DESC LIMIT 1)) END,
           CASE WHEN s.fair_share THEN s.turn / l.weight ELSE interval '0' END,
           l.gated
    -- (LIMIT 1: the planner then knows the settings are one row, however stale its statistics.)
    FROM (SELECT fair_share, turn FROM job_settings LIMIT 1) s,
         (SELECT coalesce(bool_or(x.per_group IS NOT NULL OR x.rate_count IS NOT NULL), false) AS gated,
                 coalesce(exp(sum(ln(x.weight))), 1) AS weight
          FROM (SELECT per_group, rate_count, weight FROM job_limits WHERE kind IS NULL AND group_id IS NULL
                UNION ALL
                SELECT per_group, rate_count, weight FROM job_limits WHERE kind = k AND group_id IS NULL
                UNION ALL
                SELECT per_group, rate_count, weight FROM job_limits WHERE kind IS NULL AND group_id = g) x) l
$$;

-- The effective cap of a group's running jobs of a kind: the group's, else the kind's, else
-- the queue's; NULL for none.
CREATE FUNCTION job_group_cap(g uuid, k text) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT l.per_group FROM job_limits l WHERE l.kind IS NULL AND l.group_id = g),
        (SELECT l.per_group FROM job_limits l WHERE l.kind = k AND l.group_id IS NULL),
        (SELECT l.per_group FROM job_limits l WHERE l.kind IS NULL AND l.group_id IS NULL))
$$;

-- One admission round (see the header): tags up to `max_jobs` waiting jobs whose gates are
-- open and folds batch completions. Run by one
-- process at a time (the caller holds the admitter's lock); wakes idle workers when it admits.
-- Returns how many jobs it admitted and how many batches it found finished.
CREATE FUNCTION admit_jobs(max_jobs integer DEFAULT 1000, OUT admitted integer, OUT batches_finished integer)
LANGUAGE plpgsql AS $$
DECLARE
    fair constant boolean := (SELECT s.fair_share FROM job_settings s);
    paused constant text[] := ARRAY(SELECT p.kind FROM job_pauses p);
BEGIN
    -- Tokens of admitted jobs that will not start (cancelled, deleted) go back; spent ones
    -- leave once older than their kind's period (or when the kind has no rate any more).
    DELETE FROM job_rate_tokens t
    WHERE (t.started_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.job_id AND j.status = 'pending' AND j.tag IS NOT NULL))
       OR t.started_at < now() - coalesce(
              (SELECT l.rate_period FROM job_limits l WHERE l.kind = t.kind AND l.group_id IS NULL AND l.rate_count IS NOT NULL),
              interval '0');

    -- The steps are materialized and the pause test is a plain filter, so that the planner
    -- estimates the waiting jobs from statistics, joins them by hash and computes each
    -- group's free slots and each kind's tokens once per round, not once per waiting job.
    WITH due AS MATERIALIZED (
        SELECT j.id, j.group_id, j.kind, j.priority, j.seq, j.next_attempt_at
        FROM jobs j
        WHERE j.status = 'pending' AND j.tag IS NULL AND j.next_attempt_at <= now()
          AND j.kind <> ALL (paused) AND NOT '*' = ANY (paused)
    ), scopes AS MATERIALIZED (
        SELECT d.group_id, d.kind, job_group_cap(d.group_id, d.kind) AS cap
        FROM (SELECT DISTINCT group_id, kind FROM due) d
    ), running AS (
        SELECT j.group_id, j.kind, count(*) AS n FROM jobs j WHERE j.status = 'running' GROUP BY 1, 2
    ), free_slots AS MATERIALIZED (
        -- Running plus claimable jobs count against the cap; claimable ones are counted per
        -- group from the group's own index.
        SELECT s.group_id, s.kind,
               s.cap - coalesce(r.n, 0)
                     - (SELECT count(*) FROM jobs q
                        WHERE q.group_id = s.group_id AND q.status = 'pending' AND q.tag IS NOT NULL AND q.kind = s.kind) AS free
        FROM scopes s LEFT JOIN running r ON r.group_id = s.group_id AND r.kind = s.kind
        WHERE s.cap IS NOT NULL
    ), tokens AS MATERIALIZED (
        SELECT l.kind,
               l.rate_count - (SELECT count(*) FROM job_rate_tokens t
                               WHERE t.kind = l.kind AND (t.started_at IS NULL OR t.started_at > now() - l.rate_period)) AS free
        FROM job_limits l
        WHERE l.group_id IS NULL AND l.rate_count IS NOT NULL AND l.kind IN (SELECT kind FROM scopes)
    ), ranked AS MATERIALIZED (
        SELECT d.*, row_number() OVER (PARTITION BY d.group_id, d.kind ORDER BY d.priority, d.seq) AS turn_in_group
        FROM due d
    ), under_cap AS (
        SELECT r.* FROM ranked r LEFT JOIN free_slots f ON f.group_id = r.group_id AND f.kind = r.kind
        WHERE f.free IS NULL OR r.turn_in_group <= f.free
    ), under_rate AS (
        -- Groups take turns for a kind's tokens: every group's first job, then every second...
        SELECT u.*, row_number() OVER (PARTITION BY u.kind ORDER BY u.priority, u.turn_in_group, u.seq) AS turn_in_kind
        FROM under_cap u
    ), chosen AS MATERIALIZED (
        SELECT u.* FROM under_rate u LEFT JOIN tokens t ON t.kind = u.kind
        WHERE t.free IS NULL OR u.turn_in_kind <= t.free
        ORDER BY u.priority, u.turn_in_group, u.seq
        LIMIT max_jobs
    ), bases AS (
        SELECT c.group_id, c.priority, c.kind, t.tag AS first_tag, t.step
        FROM (SELECT DISTINCT group_id, priority, kind FROM chosen) c, job_tags(c.group_id, c.priority, c.kind) t
    ), tagged AS (
        SELECT c.id,
               CASE WHEN fair THEN b.first_tag + (row_number() OVER (PARTITION BY c.group_id, c.priority, c.kind ORDER BY c.seq) - 1) * b.step
                    ELSE c.next_attempt_at END AS tag
        FROM chosen c JOIN bases b ON b.group_id = c.group_id AND b.priority = c.priority AND b.kind = c.kind
    ), done AS (
        UPDATE jobs j SET tag = t.tag
        FROM tagged t
        WHERE j.id = t.id AND j.status = 'pending' AND j.tag IS NULL
        RETURNING j.id, j.kind
    ), charged AS (
        INSERT INTO job_rate_tokens (kind, job_id)
        SELECT d.kind, d.id FROM done d WHERE d.kind IN (SELECT kind FROM tokens)
    )
    SELECT count(*) INTO admitted FROM done;
    IF admitted > 0 THEN
        PERFORM pg_notify('imagejobs.' || current_schema(), 'job');
    END IF;

    WITH moved AS (
        DELETE FROM batch_events RETURNING batch_id, n
    ), sums AS (
        SELECT batch_id, sum(n)::integer AS n FROM moved GROUP BY batch_id
    ), folded AS (
        UPDATE batches b
        SET finished_jobs = b.finished_jobs + s.n,
            finished_at = CASE WHEN b.finished_jobs + s.n >= b.job_count THEN coalesce(b.finished_at, now()) END
        FROM sums s
        WHERE b.id = s.batch_id
        RETURNING b.id, b.finished_at
    )
    SELECT count(pg_notify('imagejobs.' || current_schema() || '.batches', f.id::text)) INTO batches_finished
    FROM folded f JOIN batches prior ON prior.id = f.id
    WHERE f.finished_at IS NOT NULL AND prior.finished_at IS NULL;
END
$$;
-- A job's start time: ISO 8601 with a zone, at most 366 days ahead (a time already past runs now).
CREATE FUNCTION job_item_time(value text, item integer) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
BEGIN
    IF value ~ '^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}(:?\d{2})?)$' THEN
        BEGIN
            t := value::timestamptz;
        EXCEPTION WHEN others THEN
            t := NULL;
        END;
    END IF;
    IF t IS NULL THEN
        PERFORM job_input_error(item, 'run_at', 'run_at must be an ISO 8601 time with a zone, like 2026-12-24T18:00:00Z');
    END IF;
    IF t > now() + interval '366 days' THEN
        PERFORM job_input_error(item, 'run_at', 'run_at must be at most 366 days ahead');
    END IF;
    RETURN t;
END
$$;

CREATE OR REPLACE FUNCTION job_item(job jsonb, item integer) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    image_keys constant text[] := ARRAY['conversation_id', 'height', 'idempotency_key', 'kind',
        'max_retries', 'model', 'negative_prompt', 'priority', 'prompt', 'run_at', 'seed', 'steps', 'timeout', 'width'];
    generic_keys constant text[] := ARRAY['group_id', 'idempotency_key', 'kind', 'max_retries', 'params', 'priority', 'run_at', 'timeout'];
    kind text;
    allowed text[];
    unknown text;
    group_field text;
    group_text text;
    group_id uuid;
    params jsonb;
    prompt text;
    negative_prompt text;
    width bigint;
    height bigint;
    steps bigint;
    seed bigint;
    model text;
    priority text;
    timeout numeric;
    max_retries bigint;
    idempotency_key text;
    run_at_text text;
    run_at timestamptz;
BEGIN
    IF job IS NULL OR jsonb_typeof(job) <> 'object' THEN
        PERFORM job_input_error(item, NULL, CASE WHEN item IS NULL THEN 'a job must be a JSON object' ELSE 'each batch item must be a JSON object' END);
    END IF;
    kind := coalesce(job_item_text(job, 'kind', item), 'image.generate');
    allowed := CASE WHEN kind = 'image.generate' THEN image_keys ELSE generic_keys END;
    SELECT k INTO unknown FROM jsonb_object_keys(job) AS k WHERE k <> ALL (allowed) ORDER BY k COLLATE "C" LIMIT 1;
    IF unknown IS NOT NULL THEN
        PERFORM job_input_error(item, unknown, format('unknown field "%s"; allowed: %s', left(unknown, 40), array_to_string(allowed, ', ')));
    END IF;

    group_field := CASE WHEN kind = 'image.generate' THEN 'conversation_id' ELSE 'group_id' END;
    group_text := job_item_text(job, group_field, item);
    IF group_text IS NULL THEN PERFORM job_input_error(item, group_field, group_field || ' is required'); END IF;
    IF group_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM job_input_error(item, group_field, group_field || ' is not a UUID');
    END IF;
    group_id := group_text::uuid;

    IF kind = 'image.generate' THEN
        prompt := job_item_text(job, 'prompt', item);
        IF prompt IS NULL THEN PERFORM job_input_error(item, 'prompt', 'prompt is required'); END IF;
        negative_prompt := job_item_text(job, 'negative_prompt', item);
        width := coalesce(job_item_integer(job, 'width', item), 512);
        height := coalesce(job_item_integer(job, 'height', item), 512);
        steps := coalesce(job_item_integer(job, 'steps', item), 30);
        seed := job_item_integer(job, 'seed', item);
        model := job_item_text(job, 'model', item);
    ELSE
        params := job -> 'params';
        IF params IS NULL OR jsonb_typeof(params) = 'null' THEN params := '{}'; END IF;
        IF jsonb_typeof(params) <> 'object' THEN PERFORM job_input_error(item, 'params', 'params must be a JSON object'); END IF;
    END IF;
    priority := coalesce(job_item_text(job, 'priority', item), 'normal');
    IF priority NOT IN ('high', 'normal', 'low') THEN
        PERFORM job_input_error(item, 'priority', format('priority must be high, normal or low, got "%s"', left(priority, 20)));
    END IF;
    timeout := coalesce(job_item_number(job, 'timeout', item), 300);
    max_retries := coalesce(job_item_integer(job, 'max_retries', item), 3);
    idempotency_key := job_item_text(job, 'idempotency_key', item);
    run_at_text := job_item_text(job, 'run_at', item);
    IF run_at_text IS NOT NULL THEN
        run_at := job_item_time(run_at_text, item);
    END IF;

    IF kind = 'image.generate' THEN
        PERFORM job_check_prompt(prompt, 'prompt', true, item);
        IF negative_prompt IS NOT NULL THEN PERFORM job_check_prompt(negative_prompt, 'negative_prompt', false, item); END IF;
        IF width NOT BETWEEN 64 AND 2048 OR width % 8 <> 0 THEN
            PERFORM job_input_error(item, 'width', format('width must be 64–2048 in steps of 8, got %s', width));
        END IF;
        IF height NOT BETWEEN 64 AND 2048 OR height % 8 <> 0 THEN
            PERFORM job_input_error(item, 'height', format('height must be 64–2048 in steps of 8, got %s', height));
        END IF;
        IF width * height > 4194304 THEN
            PERFORM job_input_error(item, 'width', format('width × height must be at most 4194304 pixels, got %s', width * height));
        END IF;
        IF steps NOT BETWEEN 1 AND 150 THEN
            PERFORM job_input_error(item, 'steps', format('steps must be 1–150, got %s', steps));
        END IF;
        IF seed NOT BETWEEN 0 AND 4294967295 THEN
            PERFORM job_input_error(item, 'seed', format('seed must be 0–4294967295, got %s', seed));
        END IF;
        IF model IS NOT NULL AND (length(model) NOT BETWEEN 1 AND 100 OR model !~ '^[A-Za-z0-9][A-Za-z0-9._:/-]*$') THEN
            PERFORM job_input_error(item, 'model', 'model must be 1–100 characters of letters, digits and . _ : / -');
        END IF;
        params := jsonb_strip_nulls(jsonb_build_object(
            'prompt', prompt, 'negative_prompt', negative_prompt, 'width', width, 'height', height, 'steps', steps,
            'seed', seed, 'model', model));
    END IF;

    IF length(kind) > 64 OR ascii(kind) NOT BETWEEN 97 AND 122 OR ltrim(kind, 'abcdefghijklmnopqrstuvwxyz0123456789_.-') <> '' THEN
        PERFORM job_input_error(item, 'kind', 'kind must be 1–64 lower-case letters, digits, ''.'', ''_'' or ''-'', starting with a letter');
    END IF;
    IF timeout NOT BETWEEN 1 AND 86400 THEN
        PERFORM job_input_error(item, 'timeout', format('timeout must be between 1 and 86400 seconds, got %s', timeout));
    END IF;
    IF max_retries NOT BETWEEN 0 AND 25 THEN
        PERFORM job_input_error(item, 'max_retries', format('max_retries must be between 0 and 25, got %s', max_retries));
    END IF;
    IF idempotency_key IS NOT NULL AND length(idempotency_key) NOT BETWEEN 1 AND 200 THEN
        PERFORM job_input_error(item, 'idempotency_key', 'idempotency_key must be 1–200 characters');
    END IF;
    IF octet_length(params::text) > 65536 THEN
        PERFORM job_input_error(item, 'params', format('parameters are %s bytes as JSON; at most 65536 are allowed', octet_length(params::text)));
    END IF;

    RETURN jsonb_build_object(
        'group', group_id, 'kind', kind, 'params', params, 'priority', priority, 'max_retries', max_retries,
        'timeout_ms', round(timeout * 1000), 'idempotency_key', idempotency_key, 'run_at', run_at);
END
$$;

CREATE OR REPLACE FUNCTION submit_job(job jsonb) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    x constant jsonb := job_item(job, NULL);
    new_id constant uuid := job_uuid_v7();
    run_at constant timestamptz := (x ->> 'run_at')::timestamptz;
    existing uuid;
BEGIN
    INSERT INTO jobs (group_id, id, kind, params, priority, max_retries, timeout, idempotency_key, next_attempt_at, tag)
    VALUES ((x ->> 'group')::uuid, new_id, x ->> 'kind', x -> 'params', (x ->> 'priority')::job_priority,
            (x ->> 'max_retries')::int, (x ->> 'timeout_ms')::bigint * interval '1 millisecond', x ->> 'idempotency_key',
            greatest(now(), run_at),
            (SELECT CASE WHEN run_at > now() OR t.gated THEN NULL ELSE t.tag END
             FROM job_tags((x ->> 'group')::uuid, (x ->> 'priority')::job_priority, x ->> 'kind') t))
    ON CONFLICT (group_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    IF NOT FOUND THEN
        SELECT j.id INTO existing FROM jobs j
        WHERE j.group_id = (x ->> 'group')::uuid AND j.idempotency_key = x ->> 'idempotency_key';
        RETURN existing;
    END IF;
    PERFORM pg_notify('imagejobs.' || current_schema(), 'job');
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION submit_jobs(items jsonb, batch_idempotency_key text DEFAULT NULL)
RETURNS TABLE (batch_id uuid, job_ids uuid[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer;
    i integer;
    x jsonb;
    prepared jsonb := '[]';
    first_group uuid;
    group_field text;
    seen_keys text[] := '{}';
    turns jsonb := '{}';
    turn_key text;
    new_batch constant uuid := job_uuid_v7();
BEGIN
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        PERFORM job_input_error(NULL, 'jobs', 'jobs must be a JSON array of job objects');
    END IF;
    n := jsonb_array_length(items);
    IF n = 0 THEN PERFORM job_input_error(NULL, 'jobs', 'a batch needs at least one job'); END IF;
    IF n > 10000 THEN PERFORM job_input_error(NULL, 'jobs', format('a batch holds at most 10000 jobs, got %s; split it', n)); END IF;
    FOR i IN 0 .. n - 1 LOOP
        x := job_item(items -> i, i);
        group_field := CASE WHEN x ->> 'kind' = 'image.generate' THEN 'conversation_id' ELSE 'group_id' END;
        IF i = 0 THEN
            first_group := (x ->> 'group')::uuid;
        ELSIF (x ->> 'group')::uuid <> first_group THEN
            PERFORM job_input_error(i, group_field, format(
                '%s %s differs from the batch''s %s; every job of a batch belongs to one %s',
                group_field, x ->> 'group', first_group, CASE WHEN group_field = 'conversation_id' THEN 'conversation' ELSE 'group' END));
        END IF;
        IF x ->> 'idempotency_key' IS NOT NULL THEN
            IF x ->> 'idempotency_key' = ANY (seen_keys) THEN
                PERFORM job_input_error(i, 'idempotency_key', 'idempotency_key repeats an earlier item of the batch');
            END IF;
            seen_keys := seen_keys || (x ->> 'idempotency_key');
        END IF;
        -- The item's turn: the batch's earlier items of its priority and kind (its tag is that
        -- many steps after theirs).
        turn_key := (x ->> 'priority') || ' ' || (x ->> 'kind');
        turns := turns || jsonb_build_object(turn_key, coalesce((turns ->> turn_key)::int + 1, 0));
        prepared := prepared || jsonb_build_array(x || jsonb_build_object('ord', i, 'id', job_uuid_v7(), 'turn', (turns ->> turn_key)::int));
    END LOOP;
    IF batch_idempotency_key IS NOT NULL AND length(batch_idempotency_key) NOT BETWEEN 1 AND 200 THEN
        PERFORM job_input_error(NULL, 'idempotency_key', 'the batch idempotency_key must be 1–200 characters');
    END IF;

    INSERT INTO batches (id, group_id, job_count, idempotency_key)
    VALUES (new_batch, first_group, n, batch_idempotency_key)
    ON CONFLICT ON CONSTRAINT batches_idempotency_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT b.id, array_agg(j.id ORDER BY j.seq)
        FROM batches b JOIN jobs j ON j.batch_id = b.id
        WHERE b.group_id = first_group AND b.idempotency_key = batch_idempotency_key
        GROUP BY b.id;
        RETURN;
    END IF;
    WITH r AS (
        SELECT * FROM jsonb_to_recordset(prepared) AS r(ord int, turn int, id uuid, kind text, params jsonb, priority job_priority,
                                                        max_retries int, timeout_ms bigint, idempotency_key text, run_at timestamptz)
    ), starts AS MATERIALIZED (
        -- One tag lookup per priority and kind; the jobs due now follow it a step apart (a
        -- delayed one leaves its step unused and is tagged by the admitter when due).
        SELECT s.priority, s.kind, CASE WHEN NOT t.gated THEN t.tag END AS first_tag, t.step
        FROM (SELECT DISTINCT priority, kind FROM r) s, job_tags(first_group, s.priority, s.kind) t
    )
    INSERT INTO jobs (group_id, batch_id, id, kind, params, priority, max_retries, timeout, idempotency_key, next_attempt_at, tag)
    SELECT first_group, new_batch, r.id, r.kind, r.params, r.priority, r.max_retries,
           r.timeout_ms * interval '1 millisecond', r.idempotency_key, greatest(now(), r.run_at),
           CASE WHEN r.run_at IS NULL OR r.run_at <= now() THEN s.first_tag + r.turn * s.step END
    FROM r JOIN starts s ON s.priority = r.priority AND s.kind = r.kind
    ORDER BY r.ord;
    PERFORM pg_notify('imagejobs.' || current_schema(), 'batch');
    RETURN QUERY
    SELECT new_batch, array_agg((r ->> 'id')::uuid ORDER BY (r ->> 'ord')::int) FROM jsonb_array_elements(prepared) AS r;
END
$$;


-- Why a pending job is not simply queued, and until when (an estimate where it depends on
-- other jobs): 'paused' (no estimate), 'scheduled' or 'retry_backoff' (its due time),
-- 'group_cap' (its group's running jobs of the kind, at the recent mean run time, to free a
-- slot for each waiting job ahead of it), 'rate_limit' (the periods the tokens ahead of it
-- take), 'admitting' (the admitter's next round). NULL for a claimable job or one not pending.
CREATE FUNCTION job_wait(job_id uuid, OUT reason text, OUT until timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    me jobs;
    cap integer;
    busy bigint;
    ahead bigint;
    mean_run interval;
    lim job_limits;
    used bigint;
BEGIN
    SELECT * INTO me FROM jobs WHERE id = job_id;
    IF NOT FOUND OR me.status <> 'pending' THEN RETURN; END IF;
    IF EXISTS (SELECT 1 FROM job_pauses p WHERE p.kind = me.kind OR p.kind = '*') THEN
        reason := 'paused';
    ELSIF me.next_attempt_at > now() THEN
        reason := CASE WHEN me.attempt > 0 THEN 'retry_backoff' ELSE 'scheduled' END;
        until := me.next_attempt_at;
    ELSIF me.tag IS NOT NULL THEN
        RETURN;
    ELSE
        cap := job_group_cap(me.group_id, me.kind);
        SELECT * INTO lim FROM job_limits l WHERE l.kind = me.kind AND l.group_id IS NULL AND l.rate_count IS NOT NULL;
        IF cap IS NOT NULL THEN
            busy := (SELECT count(*) FROM jobs j WHERE j.group_id = me.group_id AND j.kind = me.kind
                     AND (j.status = 'running' OR (j.status = 'pending' AND j.tag IS NOT NULL)));
        END IF;
        IF cap IS NOT NULL AND busy >= cap THEN
            reason := 'group_cap';
            ahead := (SELECT count(*) FROM jobs j WHERE j.group_id = me.group_id AND j.kind = me.kind
                      AND j.status = 'pending' AND j.tag IS NULL AND (j.priority, j.seq) < (me.priority, me.seq));
            mean_run := (SELECT avg(j.finished_at - j.started_at) FROM jobs j
                         WHERE j.status = 'completed' AND j.finished_at > now() - interval '1 hour' AND j.kind = me.kind);
            until := now() + mean_run * (ahead / cap + 1);
        ELSIF lim.rate_count IS NOT NULL THEN
            used := (SELECT count(*) FROM job_rate_tokens t
                     WHERE t.kind = me.kind AND (t.started_at IS NULL OR t.started_at > now() - lim.rate_period));
            ahead := (SELECT count(*) FROM jobs j WHERE j.kind = me.kind AND j.status = 'pending' AND j.tag IS NULL
                      AND j.next_attempt_at <= now() AND (j.priority, j.seq) < (me.priority, me.seq));
            IF used + ahead >= lim.rate_count THEN
                reason := 'rate_limit';
                until := now() + lim.rate_period * ceil((used + ahead + 1 - lim.rate_count)::numeric / lim.rate_count);
            ELSE
                reason := 'admitting';
                until := now();
            END IF;
        ELSE
            reason := 'admitting';
            until := now();
        END IF;
    END IF;
END
$$;

-- Replaced functions lose their settings: the count triggers run as their owner again, and
-- every entry point (the triggers, the SQL submit path, the admitter, job_wait) runs in this
-- schema whatever the caller's search_path. The tag helpers are called on every submit from
-- those entry points or from the library's statements, which already run in this schema:
-- they keep the caller's path, since a SET clause keeps a SQL function from being inlined.
ALTER FUNCTION jobs_count_inserted() SECURITY DEFINER;
ALTER FUNCTION jobs_count_updated() SECURITY DEFINER;
ALTER FUNCTION jobs_count_deleted() SECURITY DEFINER;
ALTER FUNCTION admit_jobs(integer) SECURITY DEFINER;
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['jobs_count_inserted()', 'jobs_count_updated()', 'jobs_count_deleted()',
        'job_item_time(text, integer)', 'job_item(jsonb, integer)', 'submit_job(jsonb)', 'submit_jobs(jsonb, text)',
        'admit_jobs(integer)', 'job_wait(uuid)'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    FOREACH f IN ARRAY ARRAY['job_group_phase(uuid)', 'job_tags(uuid, job_priority, text)', 'job_group_cap(uuid, text)'] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION job_item_time(text, integer) TO imagejobs_client;
GRANT EXECUTE ON FUNCTION job_group_phase(uuid), job_tags(uuid, job_priority, text), job_group_cap(uuid, text)
    TO imagejobs_client, imagejobs_worker;
GRANT EXECUTE ON FUNCTION admit_jobs(integer) TO imagejobs_worker;
GRANT EXECUTE ON FUNCTION job_wait(uuid) TO imagejobs_client;

GRANT SELECT ON job_settings, job_limits, job_pauses TO imagejobs_client, imagejobs_worker;
GRANT SELECT ON job_rate_tokens TO imagejobs_client;
GRANT SELECT ON job_counts_hour TO imagejobs_client;
GRANT SELECT, INSERT, UPDATE, DELETE ON job_counts_hour TO imagejobs_worker;
-- Re-queueing (client) and a rate-limited retry (worker) send a job back to the admitter.
GRANT UPDATE (tag) ON jobs TO imagejobs_client, imagejobs_worker;
