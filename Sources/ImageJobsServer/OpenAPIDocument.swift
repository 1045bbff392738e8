/// `GET /openapi.json`: the API described in OpenAPI 3.1. A test asks every operation it lists
/// and checks each answer's status is one the document gives for it.
enum OpenAPIDocument {
    static let json = #"""
    {
      "openapi": "3.1.0",
      "info": {
        "title": "ImageJobs",
        "version": "1",
        "description": "Image-generation jobs on a PostgreSQL queue: submit, watch (position, ETA, live events), fetch the image. Every failure is {\"error\", \"field\"?, \"index\"?}."
      },
      "servers": [{ "url": "/" }],
      "security": [{ "bearer": [] }],
      "components": {
        "securitySchemes": {
          "bearer": { "type": "http", "scheme": "bearer", "description": "A key from `imagejobs api-keys create` (ijk_…). Scopes: read; submit (includes read); admin (everything)." }
        },
        "parameters": {
          "id": { "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } },
          "idempotencyKey": { "name": "Idempotency-Key", "in": "header", "required": false, "description": "Names the submit; a body that also gives idempotency_key must give the same (422 otherwise).", "schema": { "type": "string", "minLength": 1, "maxLength": 200 } },
          "lastEventID": { "name": "Last-Event-ID", "in": "header", "required": false, "description": "The id of the last event received: a conversation's stream also sends the jobs that finished since.", "schema": { "type": "string" } }
        },
        "responses": {
          "badRequest": { "description": "The body is not JSON, or an id is not a UUID.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
          "unauthorized": { "description": "No live API key.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
          "forbidden": { "description": "The key lacks the scope.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
          "notFound": { "description": "No such job or batch.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
          "conflict": { "description": "The job's state does not allow it, or the idempotency key belongs to another job.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
          "tooLarge": { "description": "The body is over the server's limit; nothing was read past it.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
          "invalid": { "description": "Input the queue refuses, naming the field (and the batch item); nothing was written.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
          "unavailable": { "description": "The database is unavailable.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
        },
        "schemas": {
          "Error": {
            "type": "object", "required": ["error"],
            "properties": { "error": { "type": "string" }, "field": { "type": "string" }, "index": { "type": "integer" } }
          },
          "JobItem": {
            "type": "object", "required": ["conversation_id", "prompt"], "additionalProperties": false,
            "description": "One job. An optional field given as null is taken as not given.",
            "properties": {
              "conversation_id": { "type": "string", "format": "uuid" },
              "prompt": { "type": "string", "minLength": 1, "maxLength": 4000, "pattern": "\\S", "not": { "type": "string", "pattern": "[\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F]" },
                          "description": "Not only spaces; no control characters but tab and newlines; at most 16,000 bytes of UTF-8." },
              "negative_prompt": { "type": ["string", "null"], "maxLength": 4000, "not": { "type": "string", "pattern": "[\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F]" } },
              "kind": { "type": ["string", "null"], "enum": ["image.generate", null] },
              "width": { "type": ["integer", "null"], "minimum": 64, "maximum": 2048, "multipleOf": 8 },
              "height": { "type": ["integer", "null"], "minimum": 64, "maximum": 2048, "multipleOf": 8 },
              "steps": { "type": ["integer", "null"], "minimum": 1, "maximum": 150 },
              "seed": { "type": ["integer", "null"], "minimum": 0, "maximum": 4294967295 },
              "model": { "type": ["string", "null"], "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$" },
              "priority": { "type": ["string", "null"], "enum": ["high", "normal", "low", null] },
              "timeout": { "type": ["number", "null"], "minimum": 1, "maximum": 86400, "description": "Seconds one attempt may run." },
              "max_retries": { "type": ["integer", "null"], "minimum": 0, "maximum": 25 },
              "idempotency_key": { "type": ["string", "null"], "minLength": 1, "maxLength": 200, "not": { "type": "string", "pattern": "\\u0000" } },
              "run_at": { "type": ["string", "null"], "format": "date-time", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$", "description": "Not claimable before; at most 366 days ahead (422 beyond)." },
              "callback_url": { "type": ["string", "null"], "format": "uri", "maxLength": 2048, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                                "description": "Where the job's end (completed, failed, cancelled) is delivered as a signed webhook (see `webhooks`). Its host must be one the operator allowed (`imagejobs webhooks allow`), else 422; no user name or password." }
            }
          },
          "BatchRequest": {
            "description": "The items of one conversation as an array, or an object whose `callback_url` receives the batch's completion.",
            "oneOf": [
              { "type": "array", "minItems": 1, "maxItems": 10000, "items": { "$ref": "#/components/schemas/JobItem" } },
              { "type": "object", "required": ["jobs"], "additionalProperties": false,
                "properties": {
                  "jobs": { "type": "array", "minItems": 1, "maxItems": 10000, "items": { "$ref": "#/components/schemas/JobItem" } },
                  "callback_url": { "$ref": "#/components/schemas/JobItem/properties/callback_url" }
                } }
            ]
          },
          "WebhookEvent": {
            "type": "object", "required": ["type", "created_at", "data"],
            "description": "The body of a delivery, as it was when the event happened.",
            "properties": {
              "type": { "type": "string", "enum": ["job.completed", "job.failed", "job.cancelled", "batch.completed"] },
              "created_at": { "type": "string", "format": "date-time" },
              "data": { "type": "object", "description": "For a job: id, conversation_id, batch_id, kind, status, attempt, retry_count, error_message, created_at, finished_at, links. For a batch: id, conversation_id, jobs, statuses (count per status), created_at, finished_at, links." }
            }
          },
          "Event": {
            "type": "object", "description": "One Server-Sent Event: `job`, its data a Job as JSON, its id the database time of the read.",
            "properties": { "event": { "type": "string", "enum": ["job"] }, "data": { "type": "string", "contentMediaType": "application/json" }, "id": { "type": "string" }, "retry": { "type": "integer" } }
          },
          "Position": {
            "type": "object",
            "properties": {
              "position": { "type": ["integer", "null"], "description": "Claimable jobs a claim takes before this one (0 = next)." },
              "ahead_higher_priority": { "type": ["integer", "null"] },
              "eta_seconds": { "type": ["number", "null"] },
              "completion_rate": { "type": "number" },
              "waiting": {
                "type": ["object", "null"],
                "properties": {
                  "reason": { "type": "string", "enum": ["paused", "scheduled", "retry_backoff", "group_cap", "rate_limit", "admitting"] },
                  "until": { "type": ["string", "null"], "format": "date-time" }
                }
              }
            }
          },
          "Job": {
            "type": "object", "required": ["id", "conversation_id", "kind", "status", "priority"],
            "properties": {
              "id": { "type": "string", "format": "uuid" },
              "conversation_id": { "type": "string", "format": "uuid" },
              "batch_id": { "type": ["string", "null"], "format": "uuid" },
              "kind": { "type": "string" },
              "params": { "type": "object" },
              "priority": { "type": "string", "enum": ["high", "normal", "low"] },
              "status": { "type": "string", "enum": ["pending", "running", "completed", "error", "cancelled"] },
              "attempt": { "type": "integer" },
              "retry_count": { "type": "integer" },
              "max_retries": { "type": "integer" },
              "timeout": { "type": "number" },
              "errors": { "type": "array", "items": { "type": "object" } },
              "created_at": { "type": "string", "format": "date-time" },
              "next_attempt_at": { "type": "string", "format": "date-time" },
              "started_at": { "type": ["string", "null"], "format": "date-time" },
              "finished_at": { "type": ["string", "null"], "format": "date-time" },
              "error_message": { "type": ["string", "null"] },
              "progress": { "type": ["object", "null"], "description": "The running attempt's step of total, written at most once a second.", "properties": { "step": { "type": "integer" }, "total": { "type": "integer" } } },
              "position": { "$ref": "#/components/schemas/Position" },
              "result": { "type": ["object", "null"] },
              "links": { "type": "object" }
            }
          },
          "SubmittedBatch": {
            "type": "object", "required": ["batch_id", "job_ids", "created"],
            "properties": {
              "batch_id": { "type": "string", "format": "uuid" },
              "job_ids": { "type": "array", "items": { "type": "string", "format": "uuid" } },
              "created": { "type": "boolean" }
            }
          },
          "BatchProgress": {
            "type": "object",
            "properties": {
              "batch_id": { "type": "string", "format": "uuid" },
              "conversation_id": { "type": "string", "format": "uuid" },
              "total": { "type": "integer" },
              "counts": { "type": "object", "additionalProperties": { "type": "integer" } },
              "created_at": { "type": "string", "format": "date-time" },
              "finished_at": { "type": ["string", "null"], "format": "date-time" }
            }
          }
        }
      },
      "webhooks": {
        "event": {
          "post": {
            "summary": "A job's end or a batch's completion, POSTed to the submit's callback_url by a worker; retried with backoff (10 retries) until the receiver answers 2xx. Redirects are not followed; 410 stops the retries.",
            "parameters": [
              { "name": "ImageJobs-Event", "in": "header", "required": true, "schema": { "type": "string" } },
              { "name": "ImageJobs-Delivery", "in": "header", "required": true, "description": "The same on every retry of one delivery: drop duplicates by it.", "schema": { "type": "string", "format": "uuid" } },
              { "name": "ImageJobs-Signature", "in": "header", "required": true, "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" keyed with the submitting key's secret (GET /v1/webhook-secret)>. Refuse old t (replays).", "schema": { "type": "string" } }
            ],
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/WebhookEvent" } } } },
            "responses": { "2XX": { "description": "Delivered." }, "410": { "description": "Gone: no more retries." } }
          }
        }
      },
      "paths": {
        "/v1/webhook-secret": {
          "get": {
            "summary": "The secret that signs the webhooks of this key's submits (scope: submit).",
            "responses": {
              "200": { "description": "The secret.", "content": { "application/json": { "schema": { "type": "object", "required": ["secret"], "properties": { "secret": { "type": "string" } } } } } },
              "401": { "$ref": "#/components/responses/unauthorized" }, "403": { "$ref": "#/components/responses/forbidden" },
              "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/jobs": {
          "post": {
            "summary": "Submit one image job (scope: submit).",
            "parameters": [{ "$ref": "#/components/parameters/idempotencyKey" }],
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JobItem" } } } },
            "responses": {
              "201": { "description": "Created.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } },
              "200": { "description": "The job an earlier submit with the same idempotency key made.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "409": { "$ref": "#/components/responses/conflict" },
              "413": { "$ref": "#/components/responses/tooLarge" }, "422": { "$ref": "#/components/responses/invalid" },
              "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/batches": {
          "post": {
            "summary": "Submit a batch of one conversation's jobs, all or nothing (scope: submit).",
            "parameters": [{ "$ref": "#/components/parameters/idempotencyKey" }],
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BatchRequest" } } } },
            "responses": {
              "201": { "description": "Created.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SubmittedBatch" } } } },
              "200": { "description": "The batch an earlier submit with the same idempotency key made.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SubmittedBatch" } } } },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "409": { "$ref": "#/components/responses/conflict" },
              "413": { "$ref": "#/components/responses/tooLarge" }, "422": { "$ref": "#/components/responses/invalid" },
              "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/jobs/{id}": {
          "get": {
            "summary": "A job: status, attempts and errors, position and ETA while pending, result once stored (scope: read).",
            "parameters": [{ "$ref": "#/components/parameters/id" }],
            "responses": {
              "200": { "description": "The job.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "404": { "$ref": "#/components/responses/notFound" },
              "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/jobs/{id}/image": {
          "get": {
            "summary": "The stored image; its SHA-256 is the ETag (scope: read).",
            "parameters": [{ "$ref": "#/components/parameters/id" }, { "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } }],
            "responses": {
              "200": { "description": "The image.", "content": { "image/png": { "schema": { "type": "string", "contentMediaType": "image/png" } } } },
              "304": { "description": "Not modified." },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "404": { "$ref": "#/components/responses/notFound" },
              "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/jobs/{id}/cancel": {
          "post": {
            "summary": "Cancel a pending or running job (scope: submit).",
            "parameters": [{ "$ref": "#/components/parameters/id" }],
            "responses": {
              "200": { "description": "Cancelled; `was` is the status it had.", "content": { "application/json": { "schema": { "type": "object", "properties": { "id": { "type": "string" }, "status": { "type": "string" }, "was": { "type": "string" } } } } } },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "404": { "$ref": "#/components/responses/notFound" },
              "409": { "$ref": "#/components/responses/conflict" }, "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/jobs/{id}/retry": {
          "post": {
            "summary": "Send a job in error back to the queue with a fresh retry budget (scope: submit).",
            "parameters": [{ "$ref": "#/components/parameters/id" }],
            "responses": {
              "200": { "description": "Queued again.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "404": { "$ref": "#/components/responses/notFound" },
              "409": { "$ref": "#/components/responses/conflict" }, "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/jobs/{id}/events": {
          "get": {
            "summary": "Server-Sent Events: the job now, then each change; ends after its final state (scope: read).",
            "parameters": [{ "$ref": "#/components/parameters/id" }, { "$ref": "#/components/parameters/lastEventID" }],
            "responses": {
              "200": { "description": "`event: job` events whose data is the Job (less result and links).", "content": { "text/event-stream": { "schema": { "$ref": "#/components/schemas/Event" } } } },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "404": { "$ref": "#/components/responses/notFound" },
              "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/batches/{id}": {
          "get": {
            "summary": "A batch's jobs per status and when it finished (scope: read).",
            "parameters": [{ "$ref": "#/components/parameters/id" }],
            "responses": {
              "200": { "description": "The batch.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BatchProgress" } } } },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "404": { "$ref": "#/components/responses/notFound" },
              "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/conversations/{id}/jobs": {
          "get": {
            "summary": "A conversation's jobs, newest first (scope: read).",
            "parameters": [
              { "$ref": "#/components/parameters/id" },
              { "name": "status", "in": "query", "required": false, "schema": { "type": "string", "enum": ["pending", "running", "completed", "error", "cancelled"] } },
              { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 50 } }
            ],
            "responses": {
              "200": { "description": "The jobs.", "content": { "application/json": { "schema": { "type": "object", "properties": { "jobs": { "type": "array", "items": { "$ref": "#/components/schemas/Job" } } } } } } },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "422": { "$ref": "#/components/responses/invalid" },
              "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        },
        "/v1/conversations/{id}/events": {
          "get": {
            "summary": "Server-Sent Events for the conversation's queued, running and newly finished jobs (scope: read).",
            "parameters": [{ "$ref": "#/components/parameters/id" }, { "$ref": "#/components/parameters/lastEventID" }],
            "responses": {
              "200": { "description": "`event: job` events whose data is the Job (less result and links).", "content": { "text/event-stream": { "schema": { "$ref": "#/components/schemas/Event" } } } },
              "400": { "$ref": "#/components/responses/badRequest" }, "401": { "$ref": "#/components/responses/unauthorized" },
              "403": { "$ref": "#/components/responses/forbidden" }, "503": { "$ref": "#/components/responses/unavailable" }
            }
          }
        }
      }
    }
    """#
}
