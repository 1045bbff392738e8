-- 0018 api_keys, reverted: the HTTP API's keys are gone.
DROP TABLE api_keys;
