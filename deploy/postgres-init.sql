-- Runs once, when the compose file's database is first created (the postgres image runs the
-- files in /docker-entrypoint-initdb.d as the superuser). It creates the login roles the
-- services use, as docs/security.md advises: no ImageJobs program runs as the superuser.
--   imagejobs_owner  runs `imagejobs migrate` and owns the schema; CREATEROLE because
--                    migration 0004 creates the group roles and the owner then grants one;
--   image_worker     runs the workers; the `worker-role` service makes it a member of
--                    imagejobs_worker once the migrations have created that role.
-- The passwords are the compose file's demo values: use secrets of your own elsewhere.
CREATE ROLE imagejobs_owner LOGIN CREATEROLE PASSWORD 'imagejobs-owner';
ALTER DATABASE imagejobs OWNER TO imagejobs_owner;
CREATE ROLE image_worker LOGIN PASSWORD 'image-worker';
-- Role settings apply to the role a session logs in as, not to the roles it is a member of.
ALTER ROLE image_worker SET statement_timeout = '30s';
ALTER ROLE image_worker SET lock_timeout = '5s';
ALTER ROLE image_worker SET idle_in_transaction_session_timeout = '60s';
