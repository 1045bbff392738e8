-- 0009 domain_checks
--
-- What it does: moves the single-column rules of `jobs` from table CHECK constraints onto
-- domains (`job_kind`, `job_params`, `job_counter`, `job_max_retries`, `job_backoff`,
-- `job_jitter`, `job_timeout`, `job_error_message`, `job_errors`, `job_idempotency_key`).
-- The rules themselves are unchanged. Why: PostgreSQL reads back the stored expression of
-- every table CHECK constraint at the start of each INSERT or UPDATE statement on the table;
-- with sixteen of them that was about a fifth of the server's work for a one-job insert, and
-- the same again for every claim and completion. A domain's constraints are read once per
-- session and checked only when that column is written. The four rules that relate columns
-- of one row stay table constraints (same names), written with smaller expressions:
-- `jobs_finished_iff_final` uses the enum order (completed, error and cancelled are the
-- labels after running) and `jobs_running_is_claimed` counts its non-null columns.
--
-- A column's type cannot change under a view, so the views of this schema that read `jobs`
-- (the report views and any an operator added over them or over `jobs`) are dropped and
-- recreated from their own definitions, with their options, comments and grants. Other
-- views, such as an extension's (`pg_stat_statements` installed in this schema), are left
-- alone.
--
-- Caveats: `ALTER COLUMN ... TYPE` holds an ACCESS EXCLUSIVE lock on `jobs` while it checks
-- every row against the domains (no rewrite: each domain has its column's type); about a
-- second per million jobs. Submits and claims wait that long. Views in other schemas that
-- read `jobs` or these views, and materialized views, make the migration fail (nothing
-- changed) with PostgreSQL's error naming them; drop them first and recreate them after.
-- Errors for a bad value now name the domain's constraint (for example `job_kind_check`)
-- instead of the column's; the SQLSTATE (23514) is the same.

CREATE DOMAIN job_kind AS text CHECK (VALUE ~ '^[a-z][a-z0-9_.-]{0,63}$');
CREATE DOMAIN job_params AS jsonb
    CHECK (jsonb_typeof(VALUE) = 'object' AND octet_length(VALUE::text) <= 65536);
CREATE DOMAIN job_counter AS integer CHECK (VALUE >= 0);
CREATE DOMAIN job_max_retries AS integer CHECK (VALUE BETWEEN 0 AND 25);
CREATE DOMAIN job_backoff AS interval CHECK (VALUE > interval '0');
CREATE DOMAIN job_jitter AS double precision CHECK (VALUE BETWEEN 0 AND 1);
CREATE DOMAIN job_timeout AS interval CHECK (VALUE BETWEEN interval '1 second' AND interval '24 hours');
CREATE DOMAIN job_error_message AS text CHECK (octet_length(VALUE) <= 4096);
CREATE DOMAIN job_errors AS jsonb CHECK (jsonb_typeof(VALUE) = 'array');
CREATE DOMAIN job_idempotency_key AS text CHECK (length(VALUE) BETWEEN 1 AND 200);

-- The views of this schema that read `jobs`, directly or through each other, with how deep
-- each sits (drop deepest first, recreate shallowest first), to recreate after the change.
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
    DROP CONSTRAINT jobs_kind_check,
    DROP CONSTRAINT jobs_params_check,
    DROP CONSTRAINT jobs_retry_count_check,
    DROP CONSTRAINT jobs_max_retries_check,
    DROP CONSTRAINT jobs_backoff_base_check,
    DROP CONSTRAINT jobs_backoff_cap_check,
    DROP CONSTRAINT jobs_backoff_jitter_check,
    DROP CONSTRAINT jobs_timeout_check,
    DROP CONSTRAINT jobs_attempt_check,
    DROP CONSTRAINT jobs_error_message_check,
    DROP CONSTRAINT jobs_errors_check,
    DROP CONSTRAINT jobs_idempotency_key_check,
    DROP CONSTRAINT jobs_running_is_claimed,
    DROP CONSTRAINT jobs_finished_iff_final,
    ALTER COLUMN kind TYPE job_kind,
    ALTER COLUMN params TYPE job_params,
    ALTER COLUMN retry_count TYPE job_counter,
    ALTER COLUMN max_retries TYPE job_max_retries,
    ALTER COLUMN backoff_base TYPE job_backoff,
    ALTER COLUMN backoff_cap TYPE job_backoff,
    ALTER COLUMN backoff_jitter TYPE job_jitter,
    ALTER COLUMN timeout TYPE job_timeout,
    ALTER COLUMN attempt TYPE job_counter,
    ALTER COLUMN error_message TYPE job_error_message,
    ALTER COLUMN errors TYPE job_errors,
    ALTER COLUMN idempotency_key TYPE job_idempotency_key,
    ADD CONSTRAINT jobs_running_is_claimed CHECK (
        status <> 'running' OR (num_nulls(worker_id, started_at, heartbeat_at, deadline_at) = 0 AND attempt > 0)),
    ADD CONSTRAINT jobs_finished_iff_final CHECK ((status > 'running') = (finished_at IS NOT NULL));

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
