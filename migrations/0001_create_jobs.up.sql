-- 0001 create_jobs
--
-- What it does: creates the job queue's tables in the current schema: the `job_priority` and
-- `job_status` enums, `batches`, `jobs` (with CHECK constraints that keep impossible rows out)
-- and `workers` (the registry of live worker processes), plus the partial index that serves the
-- claim order `ORDER BY priority, created_at, seq` over pending jobs.
--
-- Caveats: none on a new database. `job_priority` is declared high, normal, low so that
-- `ORDER BY priority` puts high first; never reorder its labels.

CREATE TYPE job_priority AS ENUM ('high', 'normal', 'low');

CREATE TYPE job_status AS ENUM ('pending', 'running', 'completed', 'error', 'cancelled');

CREATE TABLE batches (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL,
    job_count       integer NOT NULL CHECK (job_count BETWEEN 1 AND 100000),
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT batches_idempotency_key UNIQUE (conversation_id, idempotency_key)
);

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    -- Tie-breaker of the claim order: jobs of one transaction share created_at.
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    conversation_id uuid NOT NULL,
    batch_id        uuid REFERENCES batches (id) ON DELETE CASCADE,
    kind            text NOT NULL DEFAULT 'image.generate'
                    CHECK (kind ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    params          jsonb NOT NULL
                    CHECK (jsonb_typeof(params) = 'object' AND octet_length(params::text) <= 65536),
    priority        job_priority NOT NULL DEFAULT 'normal',
    status          job_status NOT NULL DEFAULT 'pending',
    retry_count     integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries     integer NOT NULL DEFAULT 3 CHECK (max_retries BETWEEN 0 AND 25),
    -- Per-job backoff overrides; NULL takes the worker's (the queue's) setting.
    backoff_base    interval CHECK (backoff_base > interval '0'),
    backoff_cap     interval CHECK (backoff_cap > interval '0'),
    backoff_jitter  double precision CHECK (backoff_jitter BETWEEN 0 AND 1),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    timeout         interval NOT NULL DEFAULT interval '300 seconds'
                    CHECK (timeout BETWEEN interval '1 second' AND interval '24 hours'),
    -- Counts claims; the fencing token every worker write names.
    attempt         integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    worker_id       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    heartbeat_at    timestamptz,
    deadline_at     timestamptz,
    finished_at     timestamptz,
    error_message   text CHECK (octet_length(error_message) <= 4096),
    -- One object per failed attempt: {"attempt", "at", "message", "worker"}.
    errors          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(errors) = 'array'),
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    CONSTRAINT jobs_idempotency_key UNIQUE (conversation_id, idempotency_key),
    CONSTRAINT jobs_running_is_claimed CHECK (
        status <> 'running'
        OR (worker_id IS NOT NULL AND started_at IS NOT NULL AND heartbeat_at IS NOT NULL
            AND deadline_at IS NOT NULL AND attempt > 0)),
    CONSTRAINT jobs_finished_iff_final CHECK (
        (status IN ('completed', 'error', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT jobs_error_has_message CHECK (status <> 'error' OR error_message IS NOT NULL),
    CONSTRAINT jobs_retries_within_max CHECK (retry_count <= max_retries)
);

-- The claim: pending jobs in claim order. Small, because only pending rows are in it.
CREATE INDEX jobs_claim ON jobs (priority, created_at, seq) WHERE status = 'pending';

-- Retries waiting out their backoff (the queue position subtracts those ahead).
CREATE INDEX jobs_waiting ON jobs (next_attempt_at) WHERE status = 'pending' AND retry_count > 0;

-- The sweep: running jobs by heartbeat.
CREATE INDEX jobs_running ON jobs (heartbeat_at) WHERE status = 'running';

CREATE INDEX jobs_conversation ON jobs (conversation_id, created_at);

CREATE INDEX jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;

CREATE TABLE workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    concurrency  integer NOT NULL,
    kinds        text[] NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz
);
