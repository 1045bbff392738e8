-- 0011 kind_check_without_regex (down)
--
-- What it does: the rule on a job's kind is the regular expression of migration 0009 again.
-- Caveats: the same pass over `jobs` as the up migration.

ALTER DOMAIN job_kind DROP CONSTRAINT job_kind_check;
ALTER DOMAIN job_kind ADD CONSTRAINT job_kind_check CHECK (VALUE ~ '^[a-z][a-z0-9_.-]{0,63}$');
