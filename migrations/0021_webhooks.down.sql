-- 0021 webhooks, reverted: callbacks, secrets and allowed hosts are gone; delivery jobs already
-- submitted stay in the queue (a worker without the handler leaves them pending).
DROP TRIGGER batches_webhook ON batches;
DROP TRIGGER jobs_webhook ON jobs;
DROP FUNCTION batches_webhook();
DROP FUNCTION jobs_webhook();
DROP FUNCTION webhook_submit(uuid, text, uuid, text, uuid, jsonb);
DROP INDEX IF EXISTS jobs_webhook_subject;
DROP INDEX IF EXISTS jobs_webhook_deliveries;
ALTER TABLE batches DROP COLUMN webhook_url, DROP COLUMN webhook_key;
ALTER TABLE jobs DROP COLUMN webhook_url, DROP COLUMN webhook_key;
ALTER TABLE api_keys DROP COLUMN webhook_secret;
DROP TABLE webhook_hosts;
