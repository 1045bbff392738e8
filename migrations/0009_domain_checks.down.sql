-- 0009 domain_checks (down)
--
-- What it does: puts the columns of `jobs` back on their base types with the table CHECK
-- constraints of migration 0001 (same names, same rules), recreating the views of this
-- schema that read `jobs` around the change as the up migration does, and drops the domains.
-- Caveats: the same ACCESS EXCLUSIVE lock and full check of `jobs` as the up migration.

CREATE TEMP TABLE migration_0009_views ON COMMIT DROP AS
WITH RECURSIVE readers(oid, depth) AS (
    SELECT r.ev_class, 1
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = 'jobs'::regclass AND r.ev_class <> 'jobs'::regclass
    UNION
    SELECT r.ev_class, readers.depth + 1
    FROM readers
    JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = readers.oid
                    AND d.classid = 'pg_rewrite'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE r.ev_class <> readers.oid
)
SELECT c.oid, c.relname, v.depth, pg_get_viewdef(c.oid) AS definition, c.reloptions,
       obj_description(c.oid, 'pg_class') AS comment,
       ARRAY(SELECT format('GRANT %s ON %I TO %s', a.privilege_type, c.relname,
                           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END)
             FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner) AS grants
FROM (SELECT oid, max(depth) AS depth FROM readers GROUP BY oid) v
JOIN pg_class c ON c.oid = v.oid
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'v';

DO $$
DECLARE v record;
BEGIN
    FOR v IN SELECT relname FROM migration_0009_views ORDER BY depth DESC LOOP
        EXECUTE format('DROP VIEW %I', v.relname);
    END LOOP;
END
$$;

ALTER TABLE jobs
    DROP CONSTRAINT jobs_running_is_claimed,
    DROP CONSTRAINT jobs_finished_iff_final,
    ALTER COLUMN kind TYPE text,
    ALTER COLUMN params TYPE jsonb,
    ALTER COLUMN retry_count TYPE integer,
    ALTER COLUMN max_retries TYPE integer,
    ALTER COLUMN backoff_base TYPE interval,
    ALTER COLUMN backoff_cap TYPE interval,
    ALTER COLUMN backoff_jitter TYPE double precision,
    ALTER COLUMN timeout TYPE interval,
    ALTER COLUMN attempt TYPE integer,
    ALTER COLUMN error_message TYPE text,
    ALTER COLUMN errors TYPE jsonb,
    ALTER COLUMN idempotency_key TYPE text,
    ADD CONSTRAINT jobs_kind_check CHECK (kind ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    ADD CONSTRAINT jobs_params_check CHECK (jsonb_typeof(params) = 'object' AND octet_length(params::text) <= 65536),
    ADD CONSTRAINT jobs_retry_count_check CHECK (retry_count >= 0),
    ADD CONSTRAINT jobs_max_retries_check CHECK (max_retries BETWEEN 0 AND 25),
    ADD CONSTRAINT jobs_backoff_base_check CHECK (backoff_base > interval '0'),
    ADD CONSTRAINT jobs_backoff_cap_check CHECK (backoff_cap > interval '0'),
    ADD CONSTRAINT jobs_backoff_jitter_check CHECK (backoff_jitter BETWEEN 0 AND 1),
    ADD CONSTRAINT jobs_timeout_check CHECK (timeout BETWEEN interval '1 second' AND interval '24 hours'),
    ADD CONSTRAINT jobs_attempt_check CHECK (attempt >= 0),
    ADD CONSTRAINT jobs_error_message_check CHECK (octet_length(error_message) <= 4096),
    ADD CONSTRAINT jobs_errors_check CHECK (jsonb_typeof(errors) = 'array'),
    ADD CONSTRAINT jobs_idempotency_key_check CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    ADD CONSTRAINT jobs_running_is_claimed CHECK (
        status <> 'running'
        OR (worker_id IS NOT NULL AND started_at IS NOT NULL AND heartbeat_at IS NOT NULL
            AND deadline_at IS NOT NULL AND attempt > 0)),
    ADD CONSTRAINT jobs_finished_iff_final CHECK (
        (status IN ('completed', 'error', 'cancelled')) = (finished_at IS NOT NULL));

DO $$
DECLARE v record; g text;
BEGIN
    FOR v IN SELECT * FROM migration_0009_views ORDER BY depth LOOP
        EXECUTE format('CREATE VIEW %I%s AS %s', v.relname,
                       CASE WHEN v.reloptions IS NULL THEN '' ELSE format(' WITH (%s)', array_to_string(v.reloptions, ', ')) END,
                       v.definition);
        IF v.comment IS NOT NULL THEN
            EXECUTE format('COMMENT ON VIEW %I IS %L', v.relname, v.comment);
        END IF;
        FOREACH g IN ARRAY v.grants LOOP
            EXECUTE g;
        END LOOP;
    END LOOP;
END
$$;

DROP DOMAIN job_kind, job_params, job_counter, job_max_retries, job_backoff, job_jitter, job_timeout,
            job_error_message, job_errors, job_idempotency_key;
