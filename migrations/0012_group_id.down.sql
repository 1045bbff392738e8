-- 0012 group_id, reverted: the columns and the index take their old names again, and the kind
-- its default.
ALTER TABLE jobs ALTER COLUMN kind SET DEFAULT 'image.generate';
ALTER INDEX jobs_group RENAME TO jobs_conversation;
ALTER TABLE batches RENAME COLUMN group_id TO conversation_id;
ALTER TABLE jobs RENAME COLUMN group_id TO conversation_id;
