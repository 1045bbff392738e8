-- 0012 group_id
--
-- What it does: names the engine's grouping for what it is. Every job and batch belongs to a
-- group (a UUID): batches hold jobs of one group, idempotency keys are unique per group, and
-- scheduling is keyed by it. The image product's group is the conversation, so existing rows
-- keep their value; only the column is renamed, `conversation_id` → `group_id`, in `jobs` and
-- `batches`, and the index `jobs_conversation` → `jobs_group`. The reporting views keep the
-- column names they show (`report_conversations.conversation_id`, …): they read the renamed
-- column under their own names. `jobs.kind` loses its default (`image.generate`): the engine
-- has no default kind; every insert names one (`submit_job` names the image product's when an
-- item has none).
--
-- Caveats: a rename is a catalog change (no rewrite, a brief ACCESS EXCLUSIVE lock), but SQL
-- written by hand against `conversation_id` must say `group_id` afterwards, and name a kind;
-- enqueue from SQL with `submit_job` (migration 0013), which takes `conversation_id` for image
-- jobs.

ALTER TABLE jobs RENAME COLUMN conversation_id TO group_id;
ALTER TABLE batches RENAME COLUMN conversation_id TO group_id;
ALTER INDEX jobs_conversation RENAME TO jobs_group;
ALTER TABLE jobs ALTER COLUMN kind DROP DEFAULT;
