-- 0008 partial_idempotency_index (down)
--
-- What it does: puts back the full unique constraint on `jobs (conversation_id, idempotency_key)`.
-- Caveats: builds a unique index over every job while blocking writes to `jobs`. Builds of the
-- engine newer than this migration use `ON CONFLICT … WHERE idempotency_key IS NOT NULL`, which
-- the full constraint also serves.
DROP INDEX jobs_idempotency_key;
ALTER TABLE jobs ADD CONSTRAINT jobs_idempotency_key UNIQUE (conversation_id, idempotency_key);
