-- 0019 progress, reverted: jobs no longer record their handlers' progress.
ALTER TABLE jobs DROP COLUMN progress_step, DROP COLUMN progress_total;
