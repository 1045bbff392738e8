-- 0015 generic_results, reverted: `width` and `height` are columns again, filled from the
-- metadata (and removed from it).
ALTER TABLE job_results ADD COLUMN width integer CHECK (width > 0), ADD COLUMN height integer CHECK (height > 0);
UPDATE job_results
SET width = (metadata ->> 'width')::integer, height = (metadata ->> 'height')::integer,
    metadata = metadata - 'width' - 'height'
WHERE metadata ? 'width' OR metadata ? 'height';
