-- 0016 scheduling, reverted: claim order goes back to `priority, created_at, seq`; limits,
-- pauses, tags and batch completion are dropped. Jobs waiting at a gate (delayed, capped,
-- rate-limited) become claimable at their `next_attempt_at`, as retries are.

DROP FUNCTION job_wait(uuid);
DROP FUNCTION admit_jobs(integer);
DROP FUNCTION job_tags(uuid, job_priority, text);
DROP FUNCTION job_group_cap(uuid, text);
DROP FUNCTION job_group_phase(uuid);

CREATE OR REPLACE FUNCTION job_item(job jsonb, item integer) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    image_keys constant text[] := ARRAY['conversation_id', 'height', 'idempotency_key', 'kind',
        'max_retries', 'model', 'negative_prompt', 'priority', 'prompt', 'seed', 'steps', 'timeout', 'width'];
    generic_keys constant text[] := ARRAY['group_id', 'idempotency_key', 'kind', 'max_retries', 'params', 'priority', 'timeout'];
    kind text;
    allowed text[];
    unknown text;
    group_field text;
    group_text text;
    group_id uuid;
    params jsonb;
    prompt text;
    negative_prompt text;
    width bigint;
    height bigint;
    steps bigint;
    seed bigint;
    model text;
    priority text;
    timeout numeric;
    max_retries bigint;
    idempotency_key text;
BEGIN
    IF job IS NULL OR jsonb_typeof(job) <> 'object' THEN
        PERFORM job_input_error(item, NULL, CASE WHEN item IS NULL THEN 'a job must be a JSON object' ELSE 'each batch item must be a JSON object' END);
    END IF;
    kind := coalesce(job_item_text(job, 'kind', item), 'image.generate');
    allowed := CASE WHEN kind = 'image.generate' THEN image_keys ELSE generic_keys END;
    SELECT k INTO unknown FROM jsonb_object_keys(job) AS k WHERE k <> ALL (allowed) ORDER BY k COLLATE "C" LIMIT 1;
    IF unknown IS NOT NULL THEN
        PERFORM job_input_error(item, unknown, format('unknown field "%s"; allowed: %s', left(unknown, 40), array_to_string(allowed, ', ')));
    END IF;

    group_field := CASE WHEN kind = 'image.generate' THEN 'conversation_id' ELSE 'group_id' END;
    group_text := job_item_text(job, group_field, item);
    IF group_text IS NULL THEN PERFORM job_input_error(item, group_field, group_field || ' is required'); END IF;
    IF group_text !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM job_input_error(item, group_field, group_field || ' is not a UUID');
    END IF;
    group_id := group_text::uuid;

    IF kind = 'image.generate' THEN
        prompt := job_item_text(job, 'prompt', item);
        IF prompt IS NULL THEN PERFORM job_input_error(item, 'prompt', 'prompt is required'); END IF;
        negative_prompt := job_item_text(job, 'negative_prompt', item);
        width := coalesce(job_item_integer(job, 'width', item), 512);
        height := coalesce(job_item_integer(job, 'height', item), 512);
        steps := coalesce(job_item_integer(job, 'steps', item), 30);
        seed := job_item_integer(job, 'seed', item);
        model := job_item_text(job, 'model', item);
    ELSE
        params := job -> 'params';
        IF params IS NULL OR jsonb_typeof(params) = 'null' THEN params := '{}'; END IF;
        IF jsonb_typeof(params) <> 'object' THEN PERFORM job_input_error(item, 'params', 'params must be a JSON object'); END IF;
    END IF;
    priority := coalesce(job_item_text(job, 'priority', item), 'normal');
    IF priority NOT IN ('high', 'normal', 'low') THEN
        PERFORM job_input_error(item, 'priority', format('priority must be high, normal or low, got "%s"', left(priority, 20)));
    END IF;
    timeout := coalesce(job_item_number(job, 'timeout', item), 300);
    max_retries := coalesce(job_item_integer(job, 'max_retries', item), 3);
    idempotency_key := job_item_text(job, 'idempotency_key', item);

    IF kind = 'image.generate' THEN
        PERFORM job_check_prompt(prompt, 'prompt', true, item);
        IF negative_prompt IS NOT NULL THEN PERFORM job_check_prompt(negative_prompt, 'negative_prompt', false, item); END IF;
        IF width NOT BETWEEN 64 AND 2048 OR width % 8 <> 0 THEN
            PERFORM job_input_error(item, 'width', format('width must be 64–2048 in steps of 8, got %s', width));
        END IF;
        IF height NOT BETWEEN 64 AND 2048 OR height % 8 <> 0 THEN
            PERFORM job_input_error(item, 'height', format('height must be 64–2048 in steps of 8, got %s', height));
        END IF;
        IF width * height > 4194304 THEN
            PERFORM job_input_error(item, 'width', format('width × height must be at most 4194304 pixels, got %s', width * height));
        END IF;
        IF steps NOT BETWEEN 1 AND 150 THEN
            PERFORM job_input_error(item, 'steps', format('steps must be 1–150, got %s', steps));
        END IF;
        IF seed NOT BETWEEN 0 AND 4294967295 THEN
            PERFORM job_input_error(item, 'seed', format('seed must be 0–4294967295, got %s', seed));
        END IF;
        IF model IS NOT NULL AND (length(model) NOT BETWEEN 1 AND 100 OR model !~ '^[A-Za-z0-9][A-Za-z0-9._:/-]*$') THEN
            PERFORM job_input_error(item, 'model', 'model must be 1–100 characters of letters, digits and . _ : / -');
        END IF;
        params := jsonb_strip_nulls(jsonb_build_object(
            'prompt', prompt, 'negative_prompt', negative_prompt, 'width', width, 'height', height, 'steps', steps,
            'seed', seed, 'model', model));
    END IF;

    IF length(kind) > 64 OR ascii(kind) NOT BETWEEN 97 AND 122 OR ltrim(kind, 'abcdefghijklmnopqrstuvwxyz0123456789_.-') <> '' THEN
        PERFORM job_input_error(item, 'kind', 'kind must be 1–64 lower-case letters, digits, ''.'', ''_'' or ''-'', starting with a letter');
    END IF;
    IF timeout NOT BETWEEN 1 AND 86400 THEN
        PERFORM job_input_error(item, 'timeout', format('timeout must be between 1 and 86400 seconds, got %s', timeout));
    END IF;
    IF max_retries NOT BETWEEN 0 AND 25 THEN
        PERFORM job_input_error(item, 'max_retries', format('max_retries must be between 0 and 25, got %s', max_retries));
    END IF;
    IF idempotency_key IS NOT NULL AND length(idempotency_key) NOT BETWEEN 1 AND 200 THEN
        PERFORM job_input_error(item, 'idempotency_key', 'idempotency_key must be 1–200 characters');
    END IF;
    IF octet_length(params::text) > 65536 THEN
        PERFORM job_input_error(item, 'params', format('parameters are %s bytes as JSON; at most 65536 are allowed', octet_length(params::text)));
    END IF;

    RETURN jsonb_build_object(
        'group', group_id, 'kind', kind, 'params', params, 'priority', priority, 'max_retries', max_retries,
        'timeout_ms', round(timeout * 1000), 'idempotency_key', idempotency_key);
END
$$;


CREATE OR REPLACE FUNCTION submit_job(job jsonb) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    x constant jsonb := job_item(job, NULL);
    new_id constant uuid := job_uuid_v7();
    existing uuid;
BEGIN
    INSERT INTO jobs (group_id, id, kind, params, priority, max_retries, timeout, idempotency_key)
    VALUES ((x ->> 'group')::uuid, new_id, x ->> 'kind', x -> 'params', (x ->> 'priority')::job_priority,
            (x ->> 'max_retries')::int, (x ->> 'timeout_ms')::bigint * interval '1 millisecond', x ->> 'idempotency_key')
    ON CONFLICT (group_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    IF NOT FOUND THEN
        SELECT j.id INTO existing FROM jobs j
        WHERE j.group_id = (x ->> 'group')::uuid AND j.idempotency_key = x ->> 'idempotency_key';
        RETURN existing;
    END IF;
    PERFORM pg_notify('imagejobs.' || current_schema(), 'job');
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION submit_jobs(items jsonb, batch_idempotency_key text DEFAULT NULL)
RETURNS TABLE (batch_id uuid, job_ids uuid[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer;
    i integer;
    x jsonb;
    prepared jsonb := '[]';
    first_group uuid;
    group_field text;
    seen_keys text[] := '{}';
    new_batch constant uuid := job_uuid_v7();
BEGIN
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        PERFORM job_input_error(NULL, 'jobs', 'jobs must be a JSON array of job objects');
    END IF;
    n := jsonb_array_length(items);
    IF n = 0 THEN PERFORM job_input_error(NULL, 'jobs', 'a batch needs at least one job'); END IF;
    IF n > 10000 THEN PERFORM job_input_error(NULL, 'jobs', format('a batch holds at most 10000 jobs, got %s; split it', n)); END IF;
    FOR i IN 0 .. n - 1 LOOP
        x := job_item(items -> i, i);
        group_field := CASE WHEN x ->> 'kind' = 'image.generate' THEN 'conversation_id' ELSE 'group_id' END;
        IF i = 0 THEN
            first_group := (x ->> 'group')::uuid;
        ELSIF (x ->> 'group')::uuid <> first_group THEN
            PERFORM job_input_error(i, group_field, format(
                '%s %s differs from the batch''s %s; every job of a batch belongs to one %s',
                group_field, x ->> 'group', first_group, CASE WHEN group_field = 'conversation_id' THEN 'conversation' ELSE 'group' END));
        END IF;
        IF x ->> 'idempotency_key' IS NOT NULL THEN
            IF x ->> 'idempotency_key' = ANY (seen_keys) THEN
                PERFORM job_input_error(i, 'idempotency_key', 'idempotency_key repeats an earlier item of the batch');
            END IF;
            seen_keys := seen_keys || (x ->> 'idempotency_key');
        END IF;
        prepared := prepared || jsonb_build_array(x || jsonb_build_object('ord', i, 'id', job_uuid_v7()));
    END LOOP;
    IF batch_idempotency_key IS NOT NULL AND length(batch_idempotency_key) NOT BETWEEN 1 AND 200 THEN
        PERFORM job_input_error(NULL, 'idempotency_key', 'the batch idempotency_key must be 1–200 characters');
    END IF;

    INSERT INTO batches (id, group_id, job_count, idempotency_key)
    VALUES (new_batch, first_group, n, batch_idempotency_key)
    ON CONFLICT ON CONSTRAINT batches_idempotency_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT b.id, array_agg(j.id ORDER BY j.seq)
        FROM batches b JOIN jobs j ON j.batch_id = b.id
        WHERE b.group_id = first_group AND b.idempotency_key = batch_idempotency_key
        GROUP BY b.id;
        RETURN;
    END IF;
    INSERT INTO jobs (group_id, batch_id, id, kind, params, priority, max_retries, timeout, idempotency_key)
    SELECT first_group, new_batch, r.id, r.kind, r.params, r.priority::job_priority, r.max_retries,
           r.timeout_ms * interval '1 millisecond', r.idempotency_key
    FROM jsonb_to_recordset(prepared) AS r(ord int, id uuid, kind text, params jsonb, priority text, max_retries int,
                                       timeout_ms bigint, idempotency_key text)
    ORDER BY r.ord;
    PERFORM pg_notify('imagejobs.' || current_schema(), 'batch');
    RETURN QUERY
    SELECT new_batch, array_agg((r ->> 'id')::uuid ORDER BY (r ->> 'ord')::int) FROM jsonb_array_elements(prepared) AS r;
END
$$;


DROP FUNCTION job_item_time(text, integer);

CREATE OR REPLACE FUNCTION jobs_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 0, priority, date_trunc('second', created_at), count(*)
    FROM new_rows WHERE status = 'pending'
    GROUP BY 2, 3;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION jobs_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 0, priority, second, sum(n)
    FROM (
        SELECT priority, date_trunc('second', created_at) AS second, 1 AS n
        FROM new_rows WHERE status = 'pending'
        UNION ALL
        SELECT priority, date_trunc('second', created_at), -1
        FROM old_rows WHERE status = 'pending'
    ) changes
    GROUP BY 2, 3
    HAVING sum(n) <> 0;

    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 1, n.priority, date_trunc('second', n.finished_at), count(*)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status = 'completed' AND o.status <> 'completed'
    GROUP BY 2, 3;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION jobs_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (metric, priority, second, n)
    SELECT 0, priority, date_trunc('second', created_at), -count(*)
    FROM old_rows WHERE status = 'pending'
    GROUP BY 2, 3;
    RETURN NULL;
END
$$;


ALTER FUNCTION jobs_count_inserted() SECURITY DEFINER;
ALTER FUNCTION jobs_count_updated() SECURITY DEFINER;
ALTER FUNCTION jobs_count_deleted() SECURITY DEFINER;
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['jobs_count_inserted()', 'jobs_count_updated()', 'jobs_count_deleted()',
        'job_item(jsonb, integer)', 'submit_job(jsonb)', 'submit_jobs(jsonb, text)'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
    END LOOP;
END
$$;

DROP INDEX jobs_claim;
DROP INDEX jobs_gated;
DROP INDEX jobs_group_queue;
CREATE INDEX jobs_claim ON jobs (priority, created_at, seq) WHERE status = 'pending';
ALTER TABLE jobs DROP COLUMN tag;

DROP TABLE job_counts_hour;
DELETE FROM job_count_deltas WHERE metric = 0;
DELETE FROM job_counts_second WHERE metric = 0;
DELETE FROM job_counts_minute WHERE metric = 0;
INSERT INTO job_counts_second (metric, priority, second, n)
SELECT 0, priority, date_trunc('second', created_at), count(*) FROM jobs WHERE status = 'pending' GROUP BY 2, 3;
INSERT INTO job_counts_minute (metric, priority, minute, n)
SELECT 0, priority, date_trunc('minute', second), sum(n) FROM job_counts_second WHERE metric = 0 GROUP BY 2, 3;

DROP TABLE batch_events;
ALTER TABLE batches DROP COLUMN finished_jobs, DROP COLUMN finished_at;
DROP TABLE job_rate_tokens;
DROP TABLE job_pauses;
DROP TABLE job_limits;
DROP TABLE job_settings;
