-- 0018 api_keys
--
-- What it does: keys for the HTTP API (`imagejobs serve`). A key is printed once, when
-- `imagejobs api-keys create` makes it; the table keeps only its SHA-256 and its first
-- characters after `ijk_` (`prefix`: how a request's key finds its row, and how lists and
-- `revoke` name it). Scopes: `read` (jobs, batches, images), `submit` (also submit, cancel,
-- retry), `admin` (everything).
--
-- Caveats: none; a new table.

CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    prefix     text NOT NULL UNIQUE CHECK (prefix ~ '^[0-9a-f]{12}$'),
    sha256     bytea NOT NULL CHECK (length(sha256) = 32),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scopes     text[] NOT NULL CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'submit', 'admin']),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- The server checks keys with the client's rights; making and revoking keys is the owner's.
GRANT SELECT ON api_keys TO imagejobs_client;
