-- 0013 submit_job, reverted: drops the SQL submit functions (jobs submitted through them stay).
DROP FUNCTION submit_jobs(jsonb, text);
DROP FUNCTION submit_job(jsonb);
DROP FUNCTION job_item(jsonb, integer);
DROP FUNCTION job_check_prompt(text, text, boolean, integer);
DROP FUNCTION job_item_integer(jsonb, text, integer);
DROP FUNCTION job_item_number(jsonb, text, integer);
DROP FUNCTION job_item_text(jsonb, text, integer);
DROP FUNCTION job_input_error(integer, text, text);
DROP FUNCTION job_uuid_v7();
