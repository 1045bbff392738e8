-- 0007 retention (down)
--
-- What it does: drops `prune_finished`.
-- Caveats: workers of a newer build that prune will fail their prune step (and log it) until
-- migrated up again; finished jobs then accumulate.
DROP FUNCTION prune_finished(interval, integer, boolean);
