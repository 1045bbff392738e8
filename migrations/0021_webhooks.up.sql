-- 0021 webhooks
--
-- What it does: webhooks for jobs and batches submitted through the HTTP API. A submit may
-- name a callback URL whose host the operator allowed (`webhook_hosts`, managed with
-- `imagejobs webhooks allow|disallow|list`); the job (or batch) keeps the URL and the API key
-- whose secret signs the deliveries. When such a job finishes (completed, error, cancelled) or
-- such a batch's last job does, a trigger in the same transaction submits a `webhook.deliver`
-- job (high priority, 10 retries with the queue's backoff) whose parameters carry the event as
-- it was at that moment. Workers deliver it: an HTTP POST signed with HMAC-SHA256 over
-- "<unix time>.<body>" with the key's `webhook_secret`. A finish is never without its
-- delivery job, and a delivery is retried until the receiver answers 2xx.
--
-- Caveats: adding nullable columns rewrites nothing; `api_keys` is rewritten to give every
-- existing key its own secret (a small table). The triggers' WHEN clauses read only the new
-- row, so jobs without a callback pay nothing when they finish.

CREATE TABLE webhook_hosts (
    -- A host name or address, lower case, with ":port" when the callback URLs name a port.
    host       text PRIMARY KEY CHECK (host ~ '^[a-z0-9]([a-z0-9.-]{0,252})(:[0-9]{1,5})?$' OR host ~ '^\[[0-9a-f:.]+\](:[0-9]{1,5})?$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- 30 random bytes from the server's strong random source (gen_random_uuid's 122 bits, twice).
ALTER TABLE api_keys ADD COLUMN webhook_secret text NOT NULL
    DEFAULT ('whsec_' || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''));

ALTER TABLE jobs ADD COLUMN webhook_url text, ADD COLUMN webhook_key uuid;
ALTER TABLE batches ADD COLUMN webhook_url text, ADD COLUMN webhook_key uuid;

-- The deliveries, newest first, and one job's or batch's, for the dashboard: only delivery jobs
-- are in these indexes.
CREATE INDEX IF NOT EXISTS jobs_webhook_deliveries ON jobs (id) WHERE kind = 'webhook.deliver';
CREATE INDEX IF NOT EXISTS jobs_webhook_subject ON jobs ((params ->> 'job_id'), id) WHERE kind = 'webhook.deliver';

-- Submits the delivery of one event: `subject` is the job's or batch's id, `data` the event's.
CREATE FUNCTION webhook_submit(group_id uuid, url text, key uuid, event text, subject uuid, data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM submit_job(jsonb_build_object(
        'kind', 'webhook.deliver', 'group_id', group_id, 'priority', 'high', 'max_retries', 10, 'timeout', 60,
        'params', jsonb_build_object(
            'url', url, 'key', key, 'event', event, 'job_id', subject,
            'body', jsonb_build_object('type', event, 'created_at', now(), 'data', data))));
END
$$;

CREATE FUNCTION jobs_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_submit(NEW.group_id, NEW.webhook_url, NEW.webhook_key,
        CASE NEW.status WHEN 'completed' THEN 'job.completed' WHEN 'error' THEN 'job.failed' ELSE 'job.cancelled' END,
        NEW.id,
        jsonb_strip_nulls(jsonb_build_object(
            'id', NEW.id, 'conversation_id', NEW.group_id, 'batch_id', NEW.batch_id, 'kind', NEW.kind,
            'status', NEW.status, 'attempt', NEW.attempt, 'retry_count', NEW.retry_count,
            'error_message', left(NEW.error_message, 2000), 'created_at', NEW.created_at, 'finished_at', NEW.finished_at,
            'links', jsonb_build_object(
                'self', '/v1/jobs/' || NEW.id,
                'image', CASE WHEN NEW.status = 'completed' THEN '/v1/jobs/' || NEW.id || '/image' END))));
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_webhook AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.webhook_url IS NOT NULL AND NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL)
    EXECUTE FUNCTION jobs_webhook();

CREATE FUNCTION batches_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counts jsonb;
BEGIN
    SELECT jsonb_object_agg(status, n) INTO counts
    FROM (SELECT status, count(*) AS n FROM jobs WHERE batch_id = NEW.id GROUP BY status) s;
    PERFORM webhook_submit(NEW.group_id, NEW.webhook_url, NEW.webhook_key, 'batch.completed', NEW.id,
        jsonb_build_object(
            'id', NEW.id, 'conversation_id', NEW.group_id, 'jobs', NEW.job_count, 'statuses', counts,
            'created_at', NEW.created_at, 'finished_at', NEW.finished_at,
            'links', jsonb_build_object('self', '/v1/batches/' || NEW.id)));
    RETURN NULL;
END
$$;

CREATE TRIGGER batches_webhook AFTER UPDATE OF finished_at ON batches FOR EACH ROW
    WHEN (NEW.webhook_url IS NOT NULL AND NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL)
    EXECUTE FUNCTION batches_webhook();

-- The triggers run as their owner whichever role finished the job (a worker, a client's
-- cancel, the sweep), in this schema whatever the caller's search_path.
ALTER FUNCTION jobs_webhook() SECURITY DEFINER;
ALTER FUNCTION batches_webhook() SECURITY DEFINER;
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['webhook_submit(uuid, text, uuid, text, uuid, jsonb)', 'jobs_webhook()', 'batches_webhook()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;

-- The API names a submit's callback (client); workers check the host and sign (worker).
GRANT SELECT ON webhook_hosts TO imagejobs_client, imagejobs_worker;
GRANT UPDATE (webhook_url, webhook_key) ON jobs, batches TO imagejobs_client;
GRANT SELECT (id, webhook_secret) ON api_keys TO imagejobs_worker;
