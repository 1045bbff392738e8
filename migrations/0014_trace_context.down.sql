-- 0014 trace_context, reverted: drops the column (the trace links of waiting jobs are lost).
ALTER TABLE jobs DROP COLUMN trace_context;
