import Foundation
import Postgres

/// The queue's and the worker's statements, one function a statement (the maintenance's,
/// results', migrator's and reports' are beside this file).
///
/// All values travel as bound parameters. Every time comparison uses the database's `now()`;
/// no worker's clock is ever compared with a stored timestamp. Every write a worker makes to
/// a job names the attempt that claimed it (`attempt = $n AND status = 'running'`), so a write
/// from a stale attempt changes nothing.
enum JobSQL: StatementCatalog {
    /// The columns of ``Job``, in the order ``decodeJob(_:)`` reads them.
    static let jobColumns = """
        j.id, j.group_id, j.batch_id, j.kind, j.params::text AS params, j.priority, j.status,
        j.retry_count, j.max_retries, j.attempt, (extract(epoch FROM j.timeout) * 1000)::bigint AS timeout_ms,
        j.next_attempt_at, j.worker_id, j.created_at, j.started_at, j.heartbeat_at, j.deadline_at,
        j.finished_at, j.error_message, j.errors::text AS errors, j.idempotency_key, j.progress_step, j.progress_total
        """

    static func decodeJob(_ row: PGRow) throws -> Job {
        Job(
            id: try row.decode("id"), groupID: try row.decode("group_id"), batchID: try row.decode("batch_id"),
            kind: try row.decode("kind"), params: try jsonObject(row, "params"), priority: try row.decode("priority"),
            status: try row.decode("status"), retryCount: try row.decode("retry_count"), maxRetries: try row.decode("max_retries"),
            attempt: try row.decode("attempt"), timeout: .milliseconds(try row.decode("timeout_ms", as: Int64.self)), nextAttemptAt: try row.decode("next_attempt_at"),
            workerID: try row.decode("worker_id"), createdAt: try row.decode("created_at"), startedAt: try row.decode("started_at"),
            heartbeatAt: try row.decode("heartbeat_at"), deadlineAt: try row.decode("deadline_at"),
            finishedAt: try row.decode("finished_at"), errorMessage: try row.decode("error_message"),
            errors: try attemptErrors(row), idempotencyKey: try row.decode("idempotency_key"),
            progress: try row.decode("progress_step", as: Int?.self).flatMap { step in
                try row.decode("progress_total", as: Int?.self).map { JobProgress(step: step, total: $0) }
            })
    }

    /// A `jsonb` object column, read with the engine's own JSON reader (Foundation's decoder
    /// is the slowest step of a claim).
    static func jsonObject(_ row: PGRow, _ column: String) throws -> [String: JSONValue] {
        guard case .object(let o) = try JSONValue.parse(try row.decode(column, as: String.self)) else {
            throw PGError(.decoding, message: "column \"\(column)\" is not a JSON object", column: column)
        }
        return o
    }

    static func attemptErrors(_ row: PGRow) throws -> [AttemptError] {
        guard case .array(let items) = try JSONValue.parse(try row.decode("errors", as: String.self)) else {
            throw PGError(.decoding, message: "column \"errors\" is not a JSON array", column: "errors")
        }
        return items.map {
            AttemptError(attempt: $0["attempt"]?.intValue ?? 0, at: ($0["at"]?.stringValue).flatMap(PGTimestamp.parse) ?? .distantPast,
                         message: $0["message"]?.stringValue ?? "", worker: $0["worker"]?.stringValue)
        }
    }

    /// One row of an insert, as the JSON object `jsonb_to_record(set)` reads.
    struct InsertRow: Sendable {
        var bytes: [UInt8]
    }

    /// One job as the JSON object `jsonb_to_record(set)` reads, written straight to bytes;
    /// `params` is the parameters' JSON, already written (and measured) by validation. `turn`
    /// counts the batch's earlier jobs of the same priority and kind: the job's tag is that
    /// many steps after the first's (counted here, so the insert needs no window and sort).
    static func insertRow(_ spec: JobSpec, id: UUID, ord: Int, turn: Int = 0, params: [UInt8]) -> InsertRow {
        var w = JSONBytes(capacity: params.count + 200)
        w.raw("{\"ord\":")
        w.int(Int64(ord))
        w.raw(",\"turn\":")
        w.int(Int64(turn))
        w.raw(",\"id\":")
        w.uuid(id)
        w.raw(",\"kind\":")
        w.string(spec.kind)
        w.raw(",\"params\":")
        w.raw(params)
        w.raw(",\"priority\":")
        w.string(spec.priority.rawValue)
        w.raw(",\"max_retries\":")
        w.int(Int64(spec.maxRetries))
        w.raw(",\"timeout_ms\":")
        w.int(spec.timeout.milliseconds)
        if let b = spec.backoff {
            w.raw(",\"backoff_base_ms\":")
            w.int(b.base.milliseconds)
            w.raw(",\"backoff_cap_ms\":")
            w.int(b.cap.milliseconds)
            w.raw(",\"backoff_jitter\":")
            w.number(b.jitter)
        }
        if let key = spec.idempotencyKey {
            w.raw(",\"idempotency_key\":")
            w.string(key)
        }
        if let ms = spec.runAtMilliseconds {
            w.raw(",\"run_at_ms\":")
            w.int(ms)
        }
        w.raw("}")
        return InsertRow(bytes: w.bytes)
    }

    /// The rows of a batch as one JSON array.
    static func rowsArray(_ rows: [InsertRow]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(rows.reduce(2) { $0 + $1.bytes.count + 1 })
        out.append(UInt8(ascii: "["))
        for (i, row) in rows.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: row.bytes)
        }
        out.append(UInt8(ascii: "]"))
        return String(decoding: out, as: UTF8.self)
    }

    /// A JSON document bound as text (cast with `::jsonb` in the SQL).
    struct JSONText: PGEncodable {
        var text: String
        var pgBind: PGBind { .text(text) }
    }

    /// The recordset columns shared by the single and batch inserts (the tag is each's own).
    private static let recordColumns = """
        x.id, x.kind, x.params, x.priority::job_priority, x.max_retries,
        x.timeout_ms * interval '1 millisecond',
        x.backoff_base_ms * interval '1 millisecond', x.backoff_cap_ms * interval '1 millisecond',
        x.backoff_jitter, x.idempotency_key,
        CASE WHEN x.run_at_ms IS NULL THEN now() ELSE greatest(now(), to_timestamp(x.run_at_ms / 1000.0)) END
        """
    private static let recordType = """
        x(ord int, turn int, id uuid, kind text, params jsonb, priority text, max_retries int, timeout_ms bigint,
          backoff_base_ms bigint, backoff_cap_ms bigint, backoff_jitter float8, idempotency_key text, run_at_ms bigint)
        """
    /// The inserted columns matching ``recordColumns``, then the tag.
    private static let insertColumns = """
        id, kind, params, priority, max_retries, timeout, backoff_base, backoff_cap, backoff_jitter,
        idempotency_key, next_attempt_at, tag
        """

    /// Inserts one job without an idempotency key: every value bound directly (no recordset to
    /// parse, no lookup branch). The statement writes the job's queue-position delta itself and
    /// marks itself counted, so the count trigger skips it (migration 0010); the wake-up rides
    /// on the returned row. Returns the new job's timestamps only (the caller knows the rest).
    /// A job due now gets its place (its tag) from `job_tags` (migration 0016); a delayed
    /// one, or one under a cap or rate limit, waits untagged for the admitter.
    static func insertJobWithoutKey(
        _ spec: JobSpec, id: UUID, params: [UInt8], traceContext: String?, channel: String, notify: Bool
    ) -> PGQuery {
        statement("""
        WITH ins AS (
            INSERT INTO jobs (group_id, id, kind, params, priority, max_retries, timeout,
                              backoff_base, backoff_cap, backoff_jitter, trace_context, next_attempt_at, tag)
            SELECT \(spec.groupID)::uuid, \(id)::uuid, \(spec.kind)::text, \(JSONText(text: String(decoding: params, as: UTF8.self)))::jsonb,
                   p.priority, \(spec.maxRetries)::int,
                   \(spec.timeout.milliseconds)::bigint * interval '1 millisecond',
                   \(spec.backoff?.base.milliseconds)::bigint * interval '1 millisecond',
                   \(spec.backoff?.cap.milliseconds)::bigint * interval '1 millisecond',
                   \(spec.backoff?.jitter)::float8, \(traceContext)::jsonb, greatest(now(), p.run_at),
                   CASE WHEN p.run_at > now() OR t.gated THEN NULL ELSE t.tag END
            FROM (SELECT \(spec.priority.rawValue)::job_priority AS priority,
                         to_timestamp(\(spec.runAtMilliseconds)::bigint / 1000.0) AS run_at) p,
                 job_tags(\(spec.groupID)::uuid, p.priority, \(spec.kind)::text) t
            RETURNING priority, status, tag, created_at, next_attempt_at,
                      set_config('imagejobs.counted_insert', statement_timestamp()::text, true) AS counted
        ), delta AS (
            INSERT INTO job_count_deltas (metric, priority, second, n)
            SELECT 0, priority, date_trunc('second', tag), 1 FROM ins WHERE status = 'pending' AND tag IS NOT NULL
        )
        SELECT created_at, next_attempt_at, CASE WHEN \(notify)::bool THEN pg_notify(\(channel)::text, 'job') END AS notified
        FROM ins
        """)
    }

    /// Inserts one job; with an idempotency key already used in the group, returns
    /// the earlier job instead (`inserted` false). Wakes idle workers at commit.
    /// Returns the new job's timestamps only (the caller knows the rest), or with an
    /// idempotency key already used in the group, the earlier job in full.
    static func insertJob(
        _ row: InsertRow, groupID: UUID, idempotencyKey: String?, traceContext: String?, channel: String, notify: Bool
    ) -> PGQuery {
        statement("""
        WITH ins AS (
            INSERT INTO jobs (group_id, \(unsafeSQL: insertColumns), trace_context)
            SELECT \(groupID), \(unsafeSQL: recordColumns),
                   CASE WHEN x.run_at_ms / 1000.0 > extract(epoch FROM now()) OR t.gated THEN NULL ELSE t.tag END,
                   \(traceContext)::jsonb
            FROM jsonb_to_record(\(JSONText(text: String(decoding: row.bytes, as: UTF8.self)))::jsonb) AS \(unsafeSQL: recordType),
                 job_tags(\(groupID)::uuid, x.priority::job_priority, x.kind) t
            ON CONFLICT (group_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING id, created_at, next_attempt_at
        )
        SELECT true AS inserted, created_at, next_attempt_at, NULL::text AS existing,
               CASE WHEN \(notify) THEN (SELECT pg_notify(\(channel), 'job')) END AS notified
        FROM ins
        UNION ALL
        SELECT false, j.created_at, j.next_attempt_at, j.id::text, NULL
        FROM jobs j
        WHERE j.group_id = \(groupID) AND j.idempotency_key = \(idempotencyKey)
          AND NOT EXISTS (SELECT 1 FROM ins)
        """)
    }

    /// The record of a grouped submit's row: a batch's, plus its own group and trace context.
    private static let groupRecordType = """
        x(ord int, turn int, id uuid, group_id uuid, kind text, params jsonb, priority text, max_retries int, timeout_ms bigint,
          backoff_base_ms bigint, backoff_cap_ms bigint, backoff_jitter float8, idempotency_key text, run_at_ms bigint,
          trace_context text)
        """

    /// Inserts the one-job submits of a group (``SubmitGroups``) in one statement: each row its
    /// own group, key and trace context; one tag lookup per group, priority and kind, the jobs
    /// after the first a step apart as in a batch. A row whose idempotency key is taken is
    /// skipped; the answer has one row per submit in order: `inserted`, its timestamps, or
    /// the id of the job that holds its key (`existing`, when this statement can see it).
    /// One NOTIFY wakes idle workers at the group's commit.
    static func insertGroup(_ entries: [PendingSubmit], channel: String, notify: Bool) -> PGQuery {
        var turns: [String: Int] = [:]
        let rows = entries.enumerated().map { ord, e in
            let place = "\(e.spec.groupID) \(e.spec.priority.rawValue) \(e.spec.kind)"
            let turn = turns[place, default: 0]
            turns[place] = turn + 1
            var row = insertRow(e.spec, id: e.id, ord: ord, turn: turn, params: e.params).bytes
            var extra = JSONBytes(capacity: 120)
            extra.raw(",\"group_id\":")
            extra.uuid(e.spec.groupID)
            if let trace = e.traceContext {
                extra.raw(",\"trace_context\":")
                extra.string(trace)
            }
            extra.raw("}")
            row.removeLast()  // the row's closing brace, put back after the extra fields
            return InsertRow(bytes: row + extra.bytes)
        }
        var query: PGQuery = """
        WITH x AS MATERIALIZED (
            SELECT * FROM jsonb_to_recordset(\(JSONText(text: rowsArray(rows)))::jsonb) AS \(unsafeSQL: groupRecordType)
        ), starts AS MATERIALIZED (
            SELECT s.group_id, s.priority, s.kind, CASE WHEN NOT t.gated THEN t.tag END AS first_tag, t.step
            FROM (SELECT DISTINCT group_id, priority, kind FROM x) s, job_tags(s.group_id, s.priority::job_priority, s.kind) t
        ), ins AS (
            INSERT INTO jobs (group_id, \(unsafeSQL: insertColumns), trace_context)
            SELECT x.group_id, \(unsafeSQL: recordColumns),
                   CASE WHEN x.run_at_ms IS NULL OR x.run_at_ms / 1000.0 <= extract(epoch FROM now()) THEN s.first_tag + x.turn * s.step END,
                   x.trace_context::jsonb
            FROM x JOIN starts s ON s.group_id = x.group_id AND s.priority = x.priority AND s.kind = x.kind
            ORDER BY x.ord
            ON CONFLICT (group_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING id, created_at, next_attempt_at
        )
        SELECT x.ord, ins.id IS NOT NULL AS inserted, ins.created_at, ins.next_attempt_at,
               -- Looked up only for a row not inserted, on the key's unique index.
               CASE WHEN ins.id IS NULL THEN
                   (SELECT e.id FROM jobs e WHERE e.group_id = x.group_id AND e.idempotency_key = x.idempotency_key)
               END AS existing,
               CASE WHEN \(notify) AND x.ord = 0 THEN (SELECT pg_notify(\(channel), 'job')) END AS notified
        FROM x
        LEFT JOIN ins ON ins.id = x.id
        ORDER BY x.ord
        """
        // Planned each time, for the table as it is: a cached generic plan made while the
        // table was small kept reading it whole for each group's tag as it grew (measured:
        // 50-job groups at 392 jobs a second). One plan serves a whole group.
        query.prepare = false
        return statement(query)
    }

    /// Inserts a batch row and all its jobs in one statement (so one round trip and one
    /// transaction): the jobs travel as one `jsonb` array, never as one parameter per value.
    /// One tag lookup per priority and kind; the jobs due now follow it a step apart (a delayed
    /// job leaves its step unused and waits for the admitter, which tags it when due).
    static func insertBatch(
        batchID: UUID, groupID: UUID, idempotencyKey: String?, rows: [InsertRow], traceContext: String?, channel: String, notify: Bool
    ) -> PGQuery {
        statement("""
        WITH batch AS (
            INSERT INTO batches (id, group_id, job_count, idempotency_key)
            VALUES (\(batchID), \(groupID), \(rows.count), \(idempotencyKey))
            RETURNING id
        ), x AS (
            SELECT * FROM jsonb_to_recordset(\(JSONText(text: rowsArray(rows)))::jsonb) AS \(unsafeSQL: recordType)
        ), starts AS MATERIALIZED (
            -- Materialized: the tag lookups run once per priority and kind, not once per job.
            SELECT s.priority, s.kind, CASE WHEN NOT t.gated THEN t.tag END AS first_tag, t.step
            FROM (SELECT DISTINCT priority, kind FROM x) s, job_tags(\(groupID)::uuid, s.priority::job_priority, s.kind) t
        ), ins AS (
            INSERT INTO jobs (group_id, batch_id, \(unsafeSQL: insertColumns), trace_context)
            SELECT \(groupID), (SELECT id FROM batch), \(unsafeSQL: recordColumns),
                   CASE WHEN x.run_at_ms IS NULL OR x.run_at_ms / 1000.0 <= extract(epoch FROM now()) THEN s.first_tag + x.turn * s.step END,
                   \(traceContext)::jsonb
            FROM x JOIN starts s ON s.priority = x.priority AND s.kind = x.kind
            ORDER BY x.ord
            RETURNING id
        )
        SELECT count(*) AS inserted, CASE WHEN \(notify) THEN (SELECT pg_notify(\(channel), 'batch')) END AS notified
        FROM ins
        """)
    }

    /// The job ids of an existing batch, for an idempotent batch resubmit.
    static func batchByIdempotencyKey(groupID: UUID, key: String) -> PGQuery {
        statement("""
        SELECT b.id AS batch_id, array_agg(j.id ORDER BY j.seq) AS job_ids
        FROM batches b JOIN jobs j ON j.batch_id = b.id
        WHERE b.group_id = \(groupID) AND b.idempotency_key = \(key)
        GROUP BY b.id
        """)
    }

    /// One job by primary key.
    static func job(id: UUID) -> PGQuery {
        statement("SELECT \(unsafeSQL: jobColumns) FROM jobs j WHERE j.id = \(id)")
    }

    /// The jobs a set of watchers follows, in one statement whatever their number: the given
    /// jobs, and the groups' jobs that are pending or running or finished after `since`.
    static func watched(ids: [UUID], groupIDs: [UUID], finishedSince since: Date) -> PGQuery {
        statement("""
            SELECT \(unsafeSQL: jobColumns), now() AS read_at FROM jobs j WHERE j.id = ANY(\(ids)::uuid[])
            UNION
            SELECT \(unsafeSQL: jobColumns), now() AS read_at FROM jobs j
            WHERE j.group_id = ANY(\(groupIDs)::uuid[]) AND (j.status IN ('pending', 'running') OR j.finished_at > \(since))
            """)
    }

    /// Queue positions of many jobs in one statement (`job_position` for each).
    static func positions(ids: [UUID]) -> PGQuery {
        statement("SELECT u.id, p.* FROM unnest(\(ids)::uuid[]) AS u(id), job_position(u.id) p")
    }

    /// A page of a list of jobs, each filter answered from its own index so that a page costs
    /// the same at 1M jobs as at 10: a group's (on `group_id, created_at`) and a batch's
    /// (`jobs_batch`) newest first; running jobs (`jobs_running`) newest first; finished jobs by
    /// when they finished, last first (`jobs_finished`, `jobs_unsuccessful`); otherwise by id,
    /// which is time-ordered (UUIDv7: newest first to the millisecond), on the primary key. Each
    /// row carries its place in that order (`list_at`, `list_id`) for the next page's cursor.
    ///
    /// `kind` and `search` (a case-insensitive substring of the parameters' JSON) have no index:
    /// with either, the page reads at most `scan` jobs in the order above and keeps those that
    /// match, and the last row read comes back too, flagged `list_end`, to continue from.
    static func list(_ filter: JobListFilter, after cursor: JobListCursor?, limit: Int, scan: Int) -> PGQuery {
        let path: PGQuery, at: PGQuery, order: PGQuery
        if filter.groupID != nil || filter.batchID != nil {
            path = """
                (\(filter.groupID)::uuid IS NULL OR j.group_id = \(filter.groupID)::uuid)
                AND (\(filter.batchID)::uuid IS NULL OR j.batch_id = \(filter.batchID)::uuid)
                AND (\(filter.status)::job_status IS NULL OR j.status = \(filter.status)::job_status)
                """
            (at, order) = ("j.created_at", "j.created_at DESC, j.id DESC")
        } else if filter.status == .running {
            path = "j.status = 'running'"
            (at, order) = ("j.created_at", "j.created_at DESC, j.id DESC")
        } else if let status = filter.status, status.isFinal {
            path = "j.finished_at IS NOT NULL AND j.status = \(status)::job_status"
            (at, order) = ("j.finished_at", "j.finished_at DESC, j.id DESC")
        } else {
            path = "(\(filter.status)::job_status IS NULL OR j.status = \(filter.status)::job_status)"
            (at, order) = ("NULL::timestamptz", "j.id DESC")
        }
        let after: PGQuery
        switch cursor {
        case nil: after = "true"
        case let cursor? where cursor.at == nil || filter.isOrderedByID: after = "j.id < \(cursor.id)"
        case let cursor?: after = "(\(fragment: at), j.id) < (\(cursor.at)::timestamptz, \(cursor.id))"
        }
        let filtered = filter.kind != nil || filter.search != nil
        let pattern = filter.search.map { "%" + $0.replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "%", with: "\\%").replacingOccurrences(of: "_", with: "\\_") + "%" }
        var query: PGQuery = """
            WITH read AS MATERIALIZED (
                SELECT r.*, row_number() OVER () AS list_n
                FROM (SELECT \(unsafeSQL: jobColumns), \(fragment: at)::text AS list_at FROM jobs j
                      WHERE \(fragment: path) AND \(fragment: after)
                      ORDER BY \(fragment: order) LIMIT \(literal: filtered ? scan : limit)) r
            ), matched AS (
                SELECT * FROM read r
                WHERE (\(filter.kind)::text IS NULL OR r.kind = \(filter.kind)::text)
                  AND (\(pattern)::text IS NULL OR r.params ILIKE \(pattern)::text)
                ORDER BY list_n LIMIT \(literal: limit)
            )
            SELECT *, false AS list_end FROM matched
            UNION ALL
            SELECT *, true FROM read WHERE list_n = (SELECT max(list_n) FROM read)
            """
        // Planned for the values given: a generic plan could not drop the filters not given.
        query.prepare = false
        return statement(query)
    }

    /// Counts per status of a batch's jobs.
    static func batchProgress(batchID: UUID) -> PGQuery {
        statement("""
        SELECT b.id, b.group_id, b.job_count, b.created_at, b.finished_at, j.status::text AS status, count(j.id) AS n
        FROM batches b LEFT JOIN jobs j ON j.batch_id = b.id
        WHERE b.id = \(batchID)
        GROUP BY b.id, b.group_id, b.job_count, b.created_at, b.finished_at, j.status
        """)
    }

    /// The queue position of one job and, when it waits at a gate or for its time, why and
    /// until when: migration 0017's `job_position` (counted in claim order from the folded
    /// counts; a function so that it always runs with one generic plan). No row for an
    /// unknown id.
    static func position(id: UUID) -> PGQuery {
        statement("SELECT p.* FROM job_position(\(id)) p")
    }

    /// The exact position by brute force, in claim order (tests and `--exact` checks compare
    /// against it).
    static func positionBruteForce(id: UUID) -> PGQuery {
        statement("""
        SELECT count(j.id) AS position, count(j.id) FILTER (WHERE j.priority < me.priority) AS ahead_higher
        FROM jobs me LEFT JOIN jobs j
          ON j.status = 'pending' AND j.tag IS NOT NULL AND j.next_attempt_at <= now()
         AND (j.priority, j.tag, j.seq) < (me.priority, me.tag, me.seq)
        WHERE me.id = \(id)
        """)
    }

    /// The most jobs one claim statement takes (a worker with more free slots claims again at
    /// once).
    static let maxClaim = 64

    /// The limit a claim for `free` slots uses: 0 up to ``maxClaim``.
    static func claimLimit(_ free: Int) -> Int { min(max(free, 0), maxClaim) }

    /// Claims up to `limit` due jobs of the given kinds for one worker, in claim order, in one
    /// statement: ``completeAndClaim(ids:attempts:workerID:kinds:limit:)`` with nothing to
    /// complete (rows with a NULL `id` carry no job).
    static func claim(workerID: String, kinds: [String], limit: Int) -> PGQuery {
        completeAndClaim(ids: [], attempts: [], workerID: workerID, kinds: kinds, limit: limit)
    }

    /// Completes the attempts whose handlers finished and claims up to `limit` jobs, in one
    /// statement (one round trip, one transaction). Every row also carries the paused kinds
    /// (`paused_kinds`): the worker leaves them out of its next claims and hands back any job of
    /// a paused kind this claim took. Pauses are kept out of the claim's WHERE clause, which
    /// changes its estimates enough that PostgreSQL plans it afresh every time. The two updates touch disjoint rows
    /// (running ones, pending ones). `SKIP LOCKED` makes concurrent claimers pass over each
    /// other's rows instead of waiting; the MATERIALIZED CTE keeps the planner from re-running
    /// the locking subquery per row. The claim counts the attempt, so a job that kills its
    /// worker every time still runs out of retries. Every row carries the ids actually completed (fenced by
    /// attempt, like ``complete(ids:attempts:)``); with nothing to claim, one row has them and
    /// NULL job columns.
    ///
    /// The completions lock their rows with `SKIP LOCKED` too: a claimer whose snapshot still
    /// saw one of them pending follows it to its newest version and holds that row lock until
    /// its statement commits (a millisecond), and a plain UPDATE would wait for it. Rows so
    /// held come back in `busy_ids` (still this worker's attempt, just not writable this
    /// instant) for the next cycle, so no worker ever waits on another's lock.
    ///
    /// The limit is written into the text, not bound: with a bound LIMIT the planner costs
    /// the claim as if a tenth of the pending rows came back, so its plan for any value
    /// (the generic plan) is a hash join over the whole table, and it plans the statement
    /// afresh every time instead — a quarter of the server's work per cycle. Written in, each
    /// limit is a statement of its own whose plan is made once and reused: at most
    /// ``maxClaim`` + 1 of them per connection (about 170 kB of server memory each).
    static func completeAndClaim(ids: [UUID], attempts: [Int], workerID: String, kinds: [String], limit: Int) -> PGQuery {
        statement("""
        WITH mine AS (
            SELECT j.id, j.attempt FROM jobs j JOIN unnest(\(ids)::uuid[], \(attempts)::int[]) AS c(id, attempt)
                ON j.id = c.id AND j.attempt = c.attempt AND j.status = 'running'
        ), lockable AS MATERIALIZED (
            -- Rechecked on the row's newest version once locked: still running, same attempt.
            SELECT j.id FROM jobs j JOIN mine ON j.id = mine.id AND j.attempt = mine.attempt
            WHERE j.status = 'running'
            FOR NO KEY UPDATE OF j SKIP LOCKED
        ), done AS (
            UPDATE jobs j
            SET status = 'completed', finished_at = now(), heartbeat_at = now()
            FROM lockable
            WHERE j.id = lockable.id
            RETURNING j.id
        ), picked AS MATERIALIZED (
            SELECT id FROM jobs
            WHERE status = 'pending' AND tag IS NOT NULL AND next_attempt_at <= now() AND kind = ANY(\(kinds)::text[])
            ORDER BY priority, tag, seq
            LIMIT \(literal: claimLimit(limit))
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE jobs j
            SET status = 'running', attempt = j.attempt + 1, worker_id = \(workerID),
                started_at = now(), heartbeat_at = now(), deadline_at = now() + j.timeout,
                progress_step = NULL, progress_total = NULL
            FROM picked
            WHERE j.id = picked.id
            RETURNING \(unsafeSQL: jobColumns), extract(epoch FROM j.deadline_at - now())::float8 AS remaining_s,
                      j.trace_context::text AS trace_context
        )
        SELECT (SELECT coalesce(array_agg(id), '{}') FROM done) AS completed_ids,
               (SELECT coalesce(array_agg(id), '{}') FROM mine WHERE id NOT IN (SELECT id FROM lockable)) AS busy_ids,
               (SELECT coalesce(array_agg(kind), '{}') FROM job_pauses) AS paused_kinds,
               claimed.*
        FROM (SELECT 1) AS one LEFT JOIN claimed ON true
        """)
    }

    /// Marks attempts completed; only rows still running under that attempt change.
    static func complete(ids: [UUID], attempts: [Int]) -> PGQuery {
        statement("""
        UPDATE jobs j
        SET status = 'completed', finished_at = now(), heartbeat_at = now()
        FROM unnest(\(ids)::uuid[], \(attempts)::int[]) AS c(id, attempt)
        WHERE j.id = c.id AND j.attempt = c.attempt AND j.status = 'running'
        RETURNING j.id
        """)
    }

    /// The tag of a job going back to pending from running: it keeps its place, unless its
    /// kind has a rate limit, whose tokens only the admitter hands out (migration 0016).
    static let returningTag = """
        CASE WHEN EXISTS (SELECT 1 FROM job_limits l WHERE l.kind = j.kind AND l.group_id IS NULL AND l.rate_count IS NOT NULL)
             THEN NULL ELSE j.tag END
        """

    /// Records a failed attempt: back to pending with backoff while retries are left and the
    /// failure is retryable, else `error`. A timeout is final and says so in the message. A
    /// deferral (the backend said "too many requests") waits its time without charging a retry,
    /// untagged, so the admitter decides when it runs again.
    static func fail(id: UUID, attempt: Int, _ failure: AttemptFailure, backoff: RetryBackoff) -> PGQuery {
        let (message, permanent, timedOut, deferMs): (String, Bool, Bool, Int64?) = switch failure {
        case .failed(let message, let permanent): (message, permanent, false, nil)
        case .timedOut: ("", true, true, nil)
        case .deferred(let message, let after): (message, false, false, after.milliseconds)
        }
        return statement("""
        WITH f AS (
            SELECT j.id,
                   (\(permanent) OR \(timedOut) OR (j.retry_count >= j.max_retries AND \(deferMs)::bigint IS NULL)) AS final,
                   CASE WHEN \(timedOut) THEN 'timed out after ' || round(extract(epoch FROM j.timeout))::bigint || ' s'
                        ELSE \(message) END AS msg
            FROM jobs j
            WHERE j.id = \(id) AND j.attempt = \(attempt) AND j.status = 'running'
        )
        UPDATE jobs j
        SET status = CASE WHEN f.final THEN 'error'::job_status ELSE 'pending'::job_status END,
            retry_count = CASE WHEN f.final OR \(deferMs)::bigint IS NOT NULL THEN j.retry_count ELSE j.retry_count + 1 END,
            next_attempt_at = CASE WHEN f.final THEN j.next_attempt_at
                                   WHEN \(deferMs)::bigint IS NOT NULL THEN now() + \(deferMs)::bigint * interval '1 millisecond'
                                   ELSE now() + \(unsafeSQL: backoffExpression(backoff)) END,
            tag = CASE WHEN f.final THEN j.tag WHEN \(deferMs)::bigint IS NOT NULL THEN NULL ELSE \(unsafeSQL: returningTag) END,
            finished_at = CASE WHEN f.final THEN now() END,
            error_message = left(f.msg, 2000),
            errors = j.errors || (jsonb_build_object('attempt', j.attempt, 'at', now(), 'message', left(f.msg, 2000), 'worker', j.worker_id,
                                                   'retried', NOT f.final, 'timed_out', \(timedOut)::boolean)
                                  || CASE WHEN \(deferMs)::bigint IS NOT NULL THEN jsonb_build_object('deferred', true) ELSE '{}' END)
        FROM f
        WHERE j.id = f.id AND j.attempt = \(attempt) AND j.status = 'running'
        RETURNING j.status, j.retry_count, j.next_attempt_at, j.error_message
        """)
    }

    /// `least(cap, base · 2^retry_count) · (1 ± jitter)`, per-job overrides first. The queue's
    /// values are numbers the engine formats, never user text.
    static func backoffExpression(_ b: RetryBackoff) -> String {
        let base = "coalesce(j.backoff_base, interval '\(b.base.milliseconds) milliseconds')"
        let cap = "coalesce(j.backoff_cap, interval '\(b.cap.milliseconds) milliseconds')"
        let jitter = "coalesce(j.backoff_jitter, \(b.jitter.isFinite ? b.jitter : 0))"
        return "least(\(cap), \(base) * power(2, least(j.retry_count, 40))) * (1 + \(jitter) * (2 * random() - 1))"
    }

    /// Gives an attempt back without charging a retry (graceful shutdown).
    static func release(id: UUID, attempt: Int) -> PGQuery {
        statement("""
        UPDATE jobs j SET status = 'pending', next_attempt_at = now(), tag = \(unsafeSQL: returningTag)
        WHERE j.id = \(id) AND j.attempt = \(attempt) AND j.status = 'running'
        RETURNING j.id
        """)
    }

    /// Heartbeats a worker's running attempts and its registry row in one round trip; the
    /// ids returned are the attempts it still owns (a missing one was rescued or cancelled).
    static func heartbeat(workerID: String, ids: [UUID], attempts: [Int]) -> PGQuery {
        statement("""
        WITH w AS (
            UPDATE workers SET last_seen_at = now() WHERE id = \(workerID)
        )
        UPDATE jobs j SET heartbeat_at = now()
        FROM unnest(\(ids)::uuid[], \(attempts)::int[]) AS h(id, attempt)
        WHERE j.id = h.id AND j.attempt = h.attempt AND j.status = 'running' AND j.worker_id = \(workerID)
        RETURNING j.id
        """)
    }

    /// Writes the progress of a worker's running attempts, one statement for all of them; an
    /// attempt that is no longer this worker's running one writes nothing.
    static func progress(workerID: String, ids: [UUID], attempts: [Int], steps: [Int], totals: [Int]) -> PGQuery {
        statement("""
        UPDATE jobs j SET progress_step = p.step, progress_total = p.total
        FROM unnest(\(ids)::uuid[], \(attempts)::int[], \(steps)::int[], \(totals)::int[]) AS p(id, attempt, step, total)
        WHERE j.id = p.id AND j.attempt = p.attempt AND j.status = 'running' AND j.worker_id = \(workerID)
        """)
    }

    /// Registers a worker process.
    static func registerWorker(id: String, host: String, pid: Int, concurrency: Int, kinds: [String]) -> PGQuery {
        statement("""
        INSERT INTO workers (id, host, pid, concurrency, kinds) VALUES (\(id), \(host), \(pid), \(concurrency), \(kinds)::text[])
        ON CONFLICT (id) DO UPDATE SET last_seen_at = now(), stopped_at = NULL
        """)
    }

    static func stopWorker(id: String) -> PGQuery {
        statement("UPDATE workers SET stopped_at = now(), last_seen_at = now() WHERE id = \(id)")
    }


    /// Pending and running jobs per priority, for the queue-depth metric (served by the
    /// partial indexes of both states).
    static func queueDepth() -> PGQuery {
        statement("""
        SELECT status::text AS status, priority::text AS priority, count(*) AS jobs
        FROM jobs WHERE status IN ('pending', 'running')
        GROUP BY status, priority
        """)
    }



    /// Cancels a pending or running job; a running job's worker hears of it by NOTIFY (and at
    /// its next heartbeat) and stops it.
    static func cancel(id: UUID, channel: String) -> PGQuery {
        statement("""
        WITH target AS (
            SELECT id, status AS old_status, worker_id FROM jobs WHERE id = \(id) FOR UPDATE
        ), done AS (
            UPDATE jobs j SET status = 'cancelled', finished_at = now()
            FROM target t
            WHERE j.id = t.id AND t.old_status IN ('pending', 'running')
            RETURNING j.id, t.old_status
        )
        SELECT t.id, t.old_status::text AS old_status, (done.id IS NOT NULL) AS cancelled,
               CASE WHEN done.old_status = 'running' THEN (SELECT pg_notify(\(channel), 'cancel:' || t.id::text)) END AS notified
        FROM target t LEFT JOIN done ON done.id = t.id
        """)
    }

    /// Cancels every pending or running job of a batch.
    static func cancelBatch(batchID: UUID, channel: String) -> PGQuery {
        statement("""
        WITH done AS (
            UPDATE jobs SET status = 'cancelled', finished_at = now()
            WHERE batch_id = \(batchID) AND status IN ('pending', 'running')
            RETURNING id
        )
        SELECT count(*) AS cancelled,
               (SELECT count(*) FROM batches WHERE id = \(batchID)) AS batches,
               CASE WHEN count(*) > 0 THEN (SELECT pg_notify(\(channel), 'cancel-batch')) END AS notified
        FROM done
        """)
    }

    /// Re-queues a job in `error`: pending now, with a fresh retry budget, at the place a new
    /// job of its group would take (or waiting for the admitter under a cap or rate limit).
    static func requeue(id: UUID, channel: String) -> PGQuery {
        statement("""
        WITH target AS (SELECT id, status FROM jobs WHERE id = \(id) FOR UPDATE),
        done AS (
            UPDATE jobs j SET status = 'pending', retry_count = 0, next_attempt_at = now(), finished_at = NULL,
                              tag = (SELECT CASE WHEN t.gated THEN NULL ELSE t.tag END FROM job_tags(j.group_id, j.priority, j.kind) t)
            FROM target t WHERE j.id = t.id AND t.status = 'error'
            RETURNING j.id
        )
        SELECT t.id, t.status::text AS old_status, (done.id IS NOT NULL) AS requeued,
               CASE WHEN done.id IS NOT NULL THEN (SELECT pg_notify(\(channel), 'job')) END AS notified
        FROM target t LEFT JOIN done ON done.id = t.id
        """)
    }

    /// The paused kinds (`*`: all), for a worker whose every kind is paused or that was told of
    /// a pause.
    static func pausedKinds() -> PGQuery {
        statement("SELECT coalesce(array_agg(kind), '{}') AS paused_kinds FROM job_pauses")
    }

    /// Which of these jobs were cancelled (a worker checks after a cancel notification).
    static func cancelledAmong(ids: [UUID]) -> PGQuery {
        statement("SELECT id FROM jobs WHERE id = ANY(\(ids)::uuid[]) AND status = 'cancelled'")
    }

    static func currentSchema() -> PGQuery {
        statement("SELECT current_schema() AS schema")
    }
}

extension Duration {
    /// Whole milliseconds.
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
