-- 0003 job_results
--
-- What it does: adds `job_results`, one row per completed job that produced output: the bytes
-- (the PNG for image jobs) with content type, width, height, byte size, SHA-256, the backend
-- and the generation time. Rows go when their job goes (ON DELETE CASCADE).
--
-- Caveats: images live in PostgreSQL by default so any worker can store and any client can
-- read; a 512×512 PNG is a few hundred KiB, so budget disk and backups for it, and prune old
-- jobs (their results go with them). `bytes` is stored EXTERNAL (uncompressed TOAST): PNG data
-- is already compressed.

CREATE TABLE job_results (
    job_id        uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    content_type  text NOT NULL,
    bytes         bytea NOT NULL,
    width         integer CHECK (width > 0),
    height        integer CHECK (height > 0),
    byte_size     integer NOT NULL CHECK (byte_size = octet_length(bytes)),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    backend       text NOT NULL,
    generation_ms integer NOT NULL CHECK (generation_ms >= 0),
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE job_results ALTER COLUMN bytes SET STORAGE EXTERNAL;
