-- 0020 unsuccessful_index, reverted.
DROP INDEX IF EXISTS jobs_unsuccessful;
