-- 0017 position_function, reverted: the library computes positions with its own statement again.
DROP FUNCTION job_position(uuid);
