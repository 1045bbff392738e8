-- 0004 roles
--
-- What it does: creates three least-privilege group roles (NOLOGIN; grant them to your login
-- roles) and grants each exactly what it needs on this schema's tables:
--   imagejobs_client    submit, read, cancel and retry jobs (a chat backend);
--   imagejobs_worker    claim, heartbeat, complete and fail jobs, store results, run the sweep;
--   imagejobs_reporter  read jobs and batches without prompts or results (analysts, dashboards).
-- The role that runs migrations owns the tables (the owner role); nobody else can change the
-- schema. Workers may update only the columns of a job's lifecycle, never its parameters.
-- The count triggers run as their owner (SECURITY DEFINER, search_path pinned), so clients and
-- workers need no rights on the count tables to keep them right.
--
-- Caveats: roles are cluster-wide; the grants are per schema. Running this in several schemas
-- of one cluster is safe (creating an existing role is skipped; a cluster-wide advisory lock
-- makes concurrent runs take turns). Creating the roles needs CREATEROLE; each new role gets
-- role-level timeouts (statement 30 s, lock 5 s, idle in transaction 60 s) that also hold
-- behind PgBouncer, where startup parameters do not.

DO $$
DECLARE
    r text;
BEGIN
    -- Roles are cluster-wide: migrations of several schemas at once take turns here (the lock
    -- is held until this migration commits).
    PERFORM pg_advisory_xact_lock(hashtext('imagejobs.roles'));
    FOREACH r IN ARRAY ARRAY['imagejobs_client', 'imagejobs_worker', 'imagejobs_reporter'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            -- Set once, when created: an operator's later changes to these settings stay.
            EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', r, '30s');
            EXECUTE format('ALTER ROLE %I SET lock_timeout = %L', r, '5s');
            EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', r, '60s');
        END IF;
    END LOOP;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO imagejobs_client, imagejobs_worker, imagejobs_reporter', current_schema());
END
$$;

ALTER FUNCTION jobs_count_inserted() SECURITY DEFINER;
ALTER FUNCTION jobs_count_updated() SECURITY DEFINER;
ALTER FUNCTION jobs_count_deleted() SECURITY DEFINER;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION jobs_count_inserted() SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION jobs_count_updated() SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION jobs_count_deleted() SET search_path = %I, pg_temp', current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION jobs_count_inserted(), jobs_count_updated(), jobs_count_deleted() FROM PUBLIC;

-- Clients: submit (jobs and batches), read, cancel and retry.
GRANT SELECT, INSERT ON jobs, batches TO imagejobs_client;
GRANT UPDATE (status, finished_at, retry_count, next_attempt_at) ON jobs TO imagejobs_client;
GRANT SELECT ON job_results, job_counts_second, job_counts_minute, job_count_deltas TO imagejobs_client;

-- Workers: the lifecycle columns of jobs only; results; their registry; the sweep's counts.
GRANT SELECT ON jobs, batches TO imagejobs_worker;
GRANT UPDATE (status, attempt, retry_count, next_attempt_at, worker_id, started_at, heartbeat_at,
              deadline_at, finished_at, error_message, errors) ON jobs TO imagejobs_worker;
GRANT SELECT, INSERT, UPDATE ON job_results, workers TO imagejobs_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON job_counts_second, job_counts_minute TO imagejobs_worker;
GRANT SELECT, DELETE ON job_count_deltas TO imagejobs_worker;

-- Reporting: everything about jobs except their parameters (prompts) and results.
GRANT SELECT (id, seq, conversation_id, batch_id, kind, priority, status, retry_count, max_retries,
              next_attempt_at, timeout, attempt, worker_id, created_at, started_at, heartbeat_at,
              deadline_at, finished_at, error_message, errors) ON jobs TO imagejobs_reporter;
GRANT SELECT ON batches, workers, job_counts_second, job_counts_minute TO imagejobs_reporter;
GRANT SELECT (job_id, content_type, width, height, byte_size, sha256, backend, generation_ms, created_at)
    ON job_results TO imagejobs_reporter;
