-- 0015 generic_results
--
-- What it does: a result is bytes with a content type and metadata, whatever the job made.
-- The image-shaped columns `job_results.width` and `height` move into `metadata` (as the
-- numbers `width` and `height`, which is where the image product now writes them) and are
-- dropped. Nothing else changes: bytes, content type, size, SHA-256, backend and generation
-- time stay columns.
--
-- Caveats: the UPDATE rewrites each result row that has a size (the bytes are stored out of
-- line and are not copied), under a row lock each: run it when few results are being stored.

UPDATE job_results
SET metadata = metadata || jsonb_strip_nulls(jsonb_build_object('width', width, 'height', height))
WHERE width IS NOT NULL OR height IS NOT NULL;
ALTER TABLE job_results DROP COLUMN width, DROP COLUMN height;
