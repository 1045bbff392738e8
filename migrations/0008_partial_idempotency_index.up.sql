-- 0008 partial_idempotency_index
--
-- What it does: replaces the unique constraint on `jobs (conversation_id, idempotency_key)` by
-- a unique index over the jobs that have a key. Most jobs have none, yet every row version (the
-- insert, the claim, the completion: none can be a HOT update) paid an entry in the full
-- index; now only keyed jobs do. Uniqueness per conversation is unchanged (NULL keys never
-- conflicted), and the index keeps the constraint's name, so errors read the same.
-- Caveats: builds the index while holding a lock that blocks writes to `jobs` (a scan of the
-- table; seconds per million rows). On a large live queue, build it first by hand:
--   CREATE UNIQUE INDEX CONCURRENTLY jobs_idempotency_key_partial ON jobs (conversation_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- then this migration only swaps names.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'jobs_idempotency_key_partial' AND relnamespace = current_schema()::regnamespace) THEN
        CREATE UNIQUE INDEX jobs_idempotency_key_partial ON jobs (conversation_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
    END IF;
END
$$;
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key;
ALTER INDEX jobs_idempotency_key_partial RENAME TO jobs_idempotency_key;
