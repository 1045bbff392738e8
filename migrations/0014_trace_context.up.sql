-- 0014 trace_context
--
-- What it does: adds `jobs.trace_context`, the submitter's trace context (the keys the tracing
-- instrument injects, W3C `traceparent` and `tracestate` for OpenTelemetry) as a JSON object,
-- so the span of a job's run joins the trace of the request that enqueued it. NULL when the
-- submitter has no tracing set up.
--
-- Caveats: adding a nullable column without a default is a catalog change (no rewrite).
-- Reporters do not see it (their grants name columns).

ALTER TABLE jobs ADD COLUMN trace_context jsonb;
COMMENT ON COLUMN jobs.trace_context IS
    'The submitter''s trace context as its tracing instrument injected it; NULL without tracing.';
