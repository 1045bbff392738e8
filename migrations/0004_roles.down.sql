-- 0004 roles (down)
--
-- What it does: revokes this schema's grants from the three roles and makes the count triggers
-- run as the invoker again. The roles themselves stay: they are cluster-wide and other schemas
-- may use them (drop them by hand with DROP ROLE when no schema does).
-- Caveats: clients and workers logging in with these roles lose access to this schema.

REVOKE ALL ON jobs, batches, job_results, workers, job_counts_second, job_counts_minute, job_count_deltas
    FROM imagejobs_client, imagejobs_worker, imagejobs_reporter;
DO $$
BEGIN
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM imagejobs_client, imagejobs_worker, imagejobs_reporter', current_schema());
END
$$;
ALTER FUNCTION jobs_count_inserted() SECURITY INVOKER RESET search_path;
ALTER FUNCTION jobs_count_updated() SECURITY INVOKER RESET search_path;
ALTER FUNCTION jobs_count_deleted() SECURITY INVOKER RESET search_path;
GRANT EXECUTE ON FUNCTION jobs_count_inserted(), jobs_count_updated(), jobs_count_deleted() TO PUBLIC;
