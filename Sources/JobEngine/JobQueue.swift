import Foundation
import Logging
import Postgres
import Tracing

/// Limits on what a submit accepts. Every one is configurable; the defaults are what a
/// production service would accept.
public struct JobLimits: Sendable, Equatable {
    /// Most jobs in one batch. Defaults to 10,000.
    public var maxBatchSize: Int = 10_000
    /// Bytes of a job's parameters as JSON. Defaults to 64 KiB (the table's CHECK allows no more).
    public var maxParamsBytes: Int = 65_536
    /// Shortest and longest timeout. Defaults to 1 s and 24 h.
    public var timeoutRange: ClosedRange<Double> = 1...86_400
    /// Retries allowed. Defaults to 0…25.
    public var maxRetriesRange: ClosedRange<Int> = 0...25
    /// Idempotency key length. Defaults to 1…200 characters.
    public var idempotencyKeyLength: ClosedRange<Int> = 1...200

    public init() {}
}

/// The queue's client API: submit, look up, position, list, cancel and retry jobs.
///
/// A Swift server uses this (the CLI does too). Every method is one round trip unless it says
/// otherwise.
public final class JobQueue: Sendable {
    public let pool: PGPool
    public let limits: JobLimits
    /// Whether submits NOTIFY idle workers at commit. Defaults to `true`; polling still finds
    /// the jobs when it is off (PgBouncer in transaction mode).
    public let notify: Bool
    let logger: Logger
    /// Spans each submit (`job.enqueue`); the submit's trace context travels with the job.
    let tracer: any Tracer
    private let channelCache = ChannelCache()
    /// Concurrent one-job submits share statements and commits.
    private let submitGroups: SubmitGroups

    /// - Parameter tracer: the process's tracer by default, as bootstrapped when the queue is
    ///   made (bootstrap tracing first).
    public init(
        pool: PGPool, limits: JobLimits = JobLimits(), notify: Bool = true, logger: Logger,
        tracer: any Tracer = InstrumentationSystem.tracer
    ) {
        self.pool = pool
        self.limits = limits
        self.notify = notify
        self.logger = logger
        self.tracer = tracer
        // Two groups in flight: one being written while the next gathers. More split the callers
        // into smaller groups (50 callers here: 1 slot 5,000–6,700 jobs a second, 2 slots 6,300,
        // 4 slots about 4,000, 10 slots 3,300–4,300), and each group's statement NOTIFYs idle
        // workers: PostgreSQL holds one database-wide lock from a notifying commit until its
        // flush, so notifying commits go one at a time (pgbench here: 16 clients insert 6,957 a
        // second, 2,610 when each notifies). Two in flight keep that wait short.
        self.submitGroups = SubmitGroups(slots: min(2, pool.options.maxConnections))
    }

    /// The NOTIFY channel of this queue's schema (`imagejobs.<schema>`), so queues in different
    /// schemas of one database never wake each other.
    public func channel() async throws -> String {
        try await channel(on: nil)
    }

    /// The channel, looked up on `connection` when given (so a caller holding the pool's only
    /// connection does not wait for a second one).
    func channel(on connection: PGConnection?) async throws -> String {
        if let cached = channelCache.value { return cached }
        let query = JobSQL.currentSchema()
        let rows: PGRows
        if let connection { rows = try await connection.query(query) } else { rows = try await pool.query(query) }
        let row = rows[0]
        let channel = Self.channel(schema: try row.decode("schema"))
        channelCache.value = channel
        return channel
    }

    static func channel(schema: String) -> String { "imagejobs.\(schema)" }

    // MARK: Submit

    /// Checks a spec against the limits without writing anything.
    /// - Throws: ``JobQueueError`` `.invalidInput` naming the field (and `index`, for batches).
    public func validate(_ spec: JobSpec, index: Int? = nil) throws {
        _ = try validatedParams(spec, index: index)
    }

    /// Validates a spec and returns its parameters as JSON (written once, for the insert too).
    func validatedParams(_ spec: JobSpec, index: Int? = nil) throws -> [UInt8] {
        func fail(_ field: String, _ message: String) -> JobQueueError {
            JobQueueError(.invalidInput, message, field: field, index: index)
        }
        try Self.checkKind(spec.kind, index: index)
        let timeout = spec.timeout.seconds
        if !(limits.timeoutRange.contains(timeout)) {
            let got = timeout == timeout.rounded() && abs(timeout) < 1e15 ? "\(Int64(timeout))" : "\(timeout)"
            throw fail("timeout", "timeout must be between \(Int(limits.timeoutRange.lowerBound)) and \(Int(limits.timeoutRange.upperBound)) seconds, got \(got)")
        }
        if !limits.maxRetriesRange.contains(spec.maxRetries) {
            throw fail("max_retries", "max_retries must be between \(limits.maxRetriesRange.lowerBound) and \(limits.maxRetriesRange.upperBound), got \(spec.maxRetries)")
        }
        if let key = spec.idempotencyKey {
            if !limits.idempotencyKeyLength.contains(key.unicodeScalars.count) {
                throw fail("idempotency_key", "idempotency_key must be \(limits.idempotencyKeyLength.lowerBound)–\(limits.idempotencyKeyLength.upperBound) characters")
            }
            if key.unicodeScalars.contains(where: { $0.value == 0 }) { throw fail("idempotency_key", "idempotency_key must not contain NUL") }
        }
        if let runAt = spec.runAt, runAt.timeIntervalSinceNow > 366 * 86400 {
            throw fail("run_at", "run_at must be at most 366 days ahead")
        }
        if let b = spec.backoff {
            if b.base <= .zero || b.cap <= .zero { throw fail("backoff", "backoff base and cap must be positive") }
            if !(0...1).contains(b.jitter) { throw fail("backoff", "backoff jitter must be between 0 and 1") }
        }
        var w = JSONBytes()
        w.value(.object(spec.params))
        if w.bytes.count > limits.maxParamsBytes {
            throw fail("params", "parameters are \(w.bytes.count) bytes as JSON; at most \(limits.maxParamsBytes) are allowed")
        }
        if w.sawNUL { throw fail("params", "parameters must not contain NUL characters") }
        if w.sawNonFinite { throw fail("params", "parameters must be finite numbers (no NaN or Infinity)") }
        return w.bytes
    }

    /// `^[a-z][a-z0-9_.-]{0,63}$`, checked by hand (regular expressions are slow on this path).
    /// Throws `.invalidInput` naming the field unless `kind` is a valid kind name.
    static func checkKind(_ kind: String, index: Int? = nil) throws {
        if !isValidKind(kind) {
            throw JobQueueError(
                .invalidInput, "kind must be 1–64 lower-case letters, digits, '.', '_' or '-', starting with a letter", field: "kind", index: index)
        }
    }

    static func isValidKind(_ kind: String) -> Bool {
        let u = Array(kind.utf8)
        guard (1...64).contains(u.count), (97...122).contains(u[0]) else { return false }
        return u.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 95 || $0 == 46 || $0 == 45 }
    }

    /// Submits one job. With an idempotency key already used in the group, returns the
    /// earlier job and `created == false` (nothing new is written).
    ///
    /// Submits made at the same time from many tasks are grouped: those that arrive while
    /// earlier ones are being written go in together, in one statement and one commit (see
    /// ``SubmitGroups``); each still gets its own job, idempotency outcome and error, and is
    /// durable when this returns. A submit made alone is written at once.
    public func submit(_ spec: JobSpec) async throws -> (job: Job, created: Bool) {
        let params = try validatedParams(spec)
        do {
            return try await enqueueSpan(kind: spec.kind, jobs: 1) { traceContext in
                let entry = PendingSubmit(spec: spec, params: params, id: UUIDv7.make(), traceContext: traceContext)
                let submitted = try await self.submitGroups.submit(entry, using: self.insertGroup)
                return submitted
            }
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// Writes a group of submits: one alone as ever; several in one statement, falling back to
    /// one statement each when the group's fails for a reason other than the connection (so
    /// one submit's bad value fails only that submit).
    @Sendable private func insertGroup(_ entries: [PendingSubmit]) async -> [SubmitGroups.Outcome] {
        func alone(_ e: PendingSubmit) async -> SubmitGroups.Outcome {
            do {
                return .success(
                    try await pool.withConnection {
                        try await self.insert(e.spec, id: e.id, params: e.params, traceContext: e.traceContext, on: $0)
                    })
            } catch {
                return .failure(error)
            }
        }
        guard entries.count > 1 else { return [await alone(entries[0])] }
        let rows: PGRows
        do {
            rows = try await pool.withConnection { connection in
                try await connection.query(JobSQL.insertGroup(entries, channel: try await self.channel(on: connection), notify: self.notify))
            }
        } catch {
            if let pg = error as? PGError, [.connectionFailed, .connectionClosed, .poolTimeout, .poolClosed].contains(pg.kind) {
                return entries.map { _ in .failure(JobQueueError.from(error)) }
            }
            var outcomes: [SubmitGroups.Outcome] = []
            for e in entries { outcomes.append(await alone(e)) }
            return outcomes
        }
        var outcomes: [SubmitGroups.Outcome] = []
        for (e, row) in zip(entries, rows) {
            do {
                if try row.decode("inserted", as: Bool.self) {
                    outcomes.append(.success((try newJob(e.spec, id: e.id, row: row), true)))
                } else if let existing = try row.decode("existing", as: UUID?.self),
                    let full = try await pool.query(JobSQL.job(id: existing)).first
                {
                    outcomes.append(.success((try JobSQL.decodeJob(full), false)))
                } else {
                    // Its key's job committed after the statement began, or came in this same
                    // group: the single insert finds it.
                    outcomes.append(await alone(e))
                }
            } catch {
                outcomes.append(.failure(JobQueueError.from(error)))
            }
        }
        return outcomes
    }

    /// Runs a submit in a `job.enqueue` span and hands it the trace context to store.
    private func enqueueSpan<T: Sendable>(kind: String, jobs: Int, _ body: (String?) async throws -> T) async throws -> T {
        try await tracer.withSpan("job.enqueue", ofKind: .producer) { span in
            span.attributes["job.kind"] = kind
            span.attributes["job.count"] = jobs
            return try await body(JobTraceContext.current(tracer))
        }
    }

    /// Submits one job on the caller's connection, inside the caller's transaction if one is
    /// open: the job exists if and only if that transaction commits, and workers are woken at
    /// commit.
    public func submit(_ spec: JobSpec, on connection: PGConnection) async throws -> (job: Job, created: Bool) {
        let params = try validatedParams(spec)
        return try await enqueueSpan(kind: spec.kind, jobs: 1) { traceContext in
            try await insert(spec, id: UUIDv7.make(), params: params, traceContext: traceContext, on: connection)
        }
    }

    /// Inserts a spec already validated (each submit path validates once, before any I/O).
    private func insert(
        _ spec: JobSpec, id: UUID, params: [UInt8], traceContext: String?, on connection: PGConnection
    ) async throws -> (job: Job, created: Bool) {
        let channel = try await channel(on: connection)
        do {
            guard spec.idempotencyKey != nil else {
                let rows = try await connection.query(
                    JobSQL.insertJobWithoutKey(spec, id: id, params: params, traceContext: traceContext, channel: channel, notify: notify))
                guard let first = rows.first else { throw JobQueueError(.database, "the insert returned no row") }
                return (try newJob(spec, id: id, row: first), true)
            }
            let row = JobSQL.insertRow(spec, id: id, ord: 0, params: params)
            var rows = try await connection.query(
                JobSQL.insertJob(
                    row, groupID: spec.groupID, idempotencyKey: spec.idempotencyKey, traceContext: traceContext, channel: channel, notify: notify))
            if rows.isEmpty, spec.idempotencyKey != nil {
                // The conflicting job committed after this statement's snapshot was taken: ask again.
                rows = try await connection.query(
                    JobSQL.insertJob(
                        row, groupID: spec.groupID, idempotencyKey: spec.idempotencyKey, traceContext: traceContext, channel: channel, notify: false))
            }
            guard let first = rows.first else {
                throw JobQueueError(.database, "the job was neither inserted nor found")
            }
            if let existing = try first.decode("existing", as: String?.self), let existingID = UUID(uuidString: existing) {
                guard let full = try await connection.query(JobSQL.job(id: existingID)).first else {
                    throw JobQueueError(.notFound, "the job with that idempotency key disappeared", jobID: existingID)
                }
                return (try JobSQL.decodeJob(full), false)
            }
            return (try newJob(spec, id: id, row: first), true)
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// The job just inserted, from its spec and the row's database timestamps.
    private func newJob(_ spec: JobSpec, id: UUID, row: PGRow) throws -> Job {
        Job(
            id: id, groupID: spec.groupID, batchID: nil, kind: spec.kind, params: spec.params,
            priority: spec.priority, status: .pending, retryCount: 0, maxRetries: spec.maxRetries, attempt: 0,
            timeout: spec.timeout, nextAttemptAt: try row.decode("next_attempt_at"), workerID: nil,
            createdAt: try row.decode("created_at"), startedAt: nil, heartbeatAt: nil, deadlineAt: nil, finishedAt: nil,
            errorMessage: nil, errors: [], idempotencyKey: spec.idempotencyKey)
    }

    /// Submits many jobs of one group as a batch, all or nothing, in one statement.
    ///
    /// Every spec is validated first; the first invalid item (or one of another group)
    /// rejects the whole batch, naming its index and field, and nothing is written.
    /// - Parameter idempotencyKey: a resubmit with the same key returns the first batch.
    public func submitBatch(
        _ specs: [JobSpec], groupID: UUID, idempotencyKey: String? = nil
    ) async throws -> SubmittedBatch {
        let insert = try validatedBatch(specs, groupID: groupID, idempotencyKey: idempotencyKey)
        do {
            try await pool.withConnection { try await self.write(insert, on: $0) }
            return insert.submitted
        } catch let error as PGError where error.sqlState == .uniqueViolation && error.constraint == "batches_idempotency_key" {
            guard let key = idempotencyKey,
                let row = try await pool.query(JobSQL.batchByIdempotencyKey(groupID: groupID, key: key)).first
            else { throw JobQueueError.from(error) }
            return SubmittedBatch(batchID: try row.decode("batch_id"), jobIDs: try row.decode("job_ids"), created: false)
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// Submits a batch on the caller's connection, inside the caller's transaction if one is
    /// open: the batch exists if and only if that transaction commits. A batch idempotency key
    /// already used in the group fails the statement (`.duplicate`), and with it the caller's
    /// transaction; check for the earlier batch before, or submit outside a transaction.
    public func submitBatch(
        _ specs: [JobSpec], groupID: UUID, idempotencyKey: String? = nil, on connection: PGConnection
    ) async throws -> SubmittedBatch {
        let insert = try validatedBatch(specs, groupID: groupID, idempotencyKey: idempotencyKey)
        do {
            try await write(insert, on: connection)
            return insert.submitted
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// A batch checked and ready to insert.
    private struct BatchInsert: Sendable {
        var submitted: SubmittedBatch
        var groupID: UUID
        var kind: String
        var idempotencyKey: String?
        var rows: [JobSQL.InsertRow]
    }

    private func validatedBatch(_ specs: [JobSpec], groupID: UUID, idempotencyKey: String?) throws -> BatchInsert {
        if specs.isEmpty {
            throw JobQueueError(.invalidInput, "a batch needs at least one job", field: "jobs")
        }
        if specs.count > limits.maxBatchSize {
            throw JobQueueError(.invalidInput, "a batch holds at most \(limits.maxBatchSize) jobs, got \(specs.count); split it", field: "jobs")
        }
        var keys = Set<String>()
        var params: [[UInt8]] = []
        params.reserveCapacity(specs.count)
        for (i, spec) in specs.enumerated() {
            if spec.groupID != groupID {
                throw JobQueueError(
                    .invalidInput, "group_id \(spec.groupID.lowercasedString) differs from the batch's \(groupID.lowercasedString); every job of a batch belongs to one group",
                    field: "group_id", index: i)
            }
            params.append(try validatedParams(spec, index: i))
            if let key = spec.idempotencyKey, !keys.insert(key).inserted {
                throw JobQueueError(.invalidInput, "idempotency_key repeats an earlier item of the batch", field: "idempotency_key", index: i)
            }
        }
        if let key = idempotencyKey, !limits.idempotencyKeyLength.contains(key.unicodeScalars.count) {
            throw JobQueueError(.invalidInput, "the batch idempotency_key must be \(limits.idempotencyKeyLength.lowerBound)–\(limits.idempotencyKeyLength.upperBound) characters", field: "idempotency_key")
        }
        let batchID = UUIDv7.make()
        let ids = specs.map { _ in UUIDv7.make() }
        var turns: [String: Int] = [:]
        let rows = specs.indices.map { i -> JobSQL.InsertRow in
            let turn = turns["\(specs[i].priority.rawValue) \(specs[i].kind)", default: 0]
            turns["\(specs[i].priority.rawValue) \(specs[i].kind)"] = turn + 1
            return JobSQL.insertRow(specs[i], id: ids[i], ord: i, turn: turn, params: params[i])
        }
        return BatchInsert(
            submitted: SubmittedBatch(batchID: batchID, jobIDs: ids, created: true), groupID: groupID, kind: specs[0].kind,
            idempotencyKey: idempotencyKey, rows: rows)
    }

    private func write(_ insert: BatchInsert, on connection: PGConnection) async throws {
        let channel = try await channel(on: connection)
        _ = try await enqueueSpan(kind: insert.kind, jobs: insert.rows.count) { traceContext in
            try await connection.query(
                JobSQL.insertBatch(
                    batchID: insert.submitted.batchID, groupID: insert.groupID, idempotencyKey: insert.idempotencyKey,
                    rows: insert.rows, traceContext: traceContext, channel: channel, notify: notify))
        }
    }

    // MARK: Read

    /// One job by id, in one primary-key lookup.
    public func job(_ id: UUID) async throws -> Job {
        do {
            guard let row = try await pool.query(JobSQL.job(id: id)).first else {
                throw JobQueueError(.notFound, "no job \(id.lowercasedString)", jobID: id)
            }
            return try JobSQL.decodeJob(row)
        } catch {
            throw JobQueueError.from(error, jobID: id)
        }
    }

    /// A job's queue position, with an ETA from the last minute's completion rate.
    public func position(_ id: UUID) async throws -> QueuePosition {
        do {
            guard let row = try await pool.query(JobSQL.position(id: id)).first else {
                throw JobQueueError(.notFound, "no job \(id.lowercasedString)", jobID: id)
            }
            return try Self.decodePosition(row, id: id)
        } catch {
            throw JobQueueError.from(error, jobID: id)
        }
    }

    /// The positions of many jobs in one statement (for watchers of many jobs); unknown ids
    /// are left out.
    public func positions(_ ids: [UUID]) async throws -> [UUID: QueuePosition] {
        guard !ids.isEmpty else { return [:] }
        do {
            var out: [UUID: QueuePosition] = [:]
            for row in try await pool.query(JobSQL.positions(ids: ids)) {
                let id: UUID = try row.decode("id")
                out[id] = try Self.decodePosition(row, id: id)
            }
            return out
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// The jobs watchers follow, in one statement: these jobs, and these groups' jobs that are
    /// pending or running or finished after `finishedSince`; and the database's time of the
    /// read (`nil` when nothing matched).
    public func watched(ids: [UUID], groupIDs: [UUID], finishedSince: Date) async throws -> (jobs: [Job], readAt: Date?) {
        guard !ids.isEmpty || !groupIDs.isEmpty else { return ([], nil) }
        do {
            let rows = try await pool.query(JobSQL.watched(ids: ids, groupIDs: groupIDs, finishedSince: finishedSince))
            return (try rows.map(JobSQL.decodeJob), try rows.first?.decode("read_at", as: Date.self))
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// A `job_position` row as a ``QueuePosition``, the ETA from the completion rate.
    private static func decodePosition(_ row: PGRow, id: UUID) throws -> QueuePosition {
        let status: JobStatus = try row.decode("status")
        let rate: Double = try row.decode("per_second")
        let waiting = try row.decode("wait_reason", as: String?.self).flatMap(JobWait.Reason.init(rawValue:)).map {
            JobWait(reason: $0, until: try row.decode("wait_until"))
        }
        guard status == .pending, let position = try row.decode("position", as: Int?.self) else {
            let eta = waiting?.until.map { max(0, $0.timeIntervalSinceNow) }
            return QueuePosition(id: id, status: status, position: nil, aheadHigherPriority: nil, etaSeconds: eta, completionRate: rate, waiting: waiting)
        }
        let higher = max(0, try row.decode("ahead_higher", as: Int.self))
        var eta = rate > 0 ? Double(max(0, position) + 1) / rate : nil
        if let until = waiting?.until { eta = max(eta ?? 0, until.timeIntervalSinceNow) }
        if waiting?.reason == .paused { eta = nil }
        return QueuePosition(
            id: id, status: status, position: max(0, position), aheadHigherPriority: higher, etaSeconds: eta, completionRate: rate,
            waiting: waiting)
    }

    /// The position counted row by row (slow with a long queue; for checks).
    public func positionByCounting(_ id: UUID) async throws -> (position: Int, aheadHigherPriority: Int) {
        let row = try await pool.query(JobSQL.positionBruteForce(id: id))[0]
        return (try row.decode("position"), try row.decode("ahead_higher"))
    }

    /// A batch's jobs counted per status.
    public func batch(_ id: UUID) async throws -> BatchProgress {
        do {
            let rows = try await pool.query(JobSQL.batchProgress(batchID: id))
            guard let first = rows.first else { throw JobQueueError(.notFound, "no batch \(id.lowercasedString)") }
            var counts: [JobStatus: Int] = [:]
            for status in JobStatus.allCases { counts[status] = 0 }
            for row in rows {
                if let status: JobStatus = try row.decode("status") { counts[status] = try row.decode("n") }
            }
            return BatchProgress(
                batchID: id, groupID: try first.decode("group_id"), total: try first.decode("job_count"),
                counts: counts, createdAt: try first.decode("created_at"), finishedAt: try first.decode("finished_at"))
        } catch {
            throw JobQueueError.from(error)
        }
    }

    // MARK: Change

    /// Cancels a pending or running job; a running job's worker stops it.
    /// - Returns: the status the job had.
    /// - Throws: `.notFound`, or `.invalidState` when the job already finished.
    @discardableResult
    public func cancel(_ id: UUID) async throws -> JobStatus {
        do {
            let channel = try await channel()
            guard let row = try await pool.query(JobSQL.cancel(id: id, channel: channel)).first else {
                throw JobQueueError(.notFound, "no job \(id.lowercasedString)", jobID: id)
            }
            let old = try row.decode("old_status", as: JobStatus.self)
            guard try row.decode("cancelled", as: Bool.self) else {
                throw JobQueueError(.invalidState, "job \(id.lowercasedString) is \(old.rawValue); only pending or running jobs can be cancelled", jobID: id)
            }
            return old
        } catch {
            throw JobQueueError.from(error, jobID: id)
        }
    }

    /// Cancels every pending or running job of a batch; returns how many.
    @discardableResult
    public func cancelBatch(_ id: UUID) async throws -> Int {
        do {
            let channel = try await channel()
            let row = try await pool.query(JobSQL.cancelBatch(batchID: id, channel: channel))[0]
            guard try row.decode("batches", as: Int.self) == 1 else { throw JobQueueError(.notFound, "no batch \(id.lowercasedString)") }
            return try row.decode("cancelled")
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// Re-queues a job in `error` with a fresh retry budget.
    public func retry(_ id: UUID) async throws {
        do {
            let channel = try await channel()
            guard let row = try await pool.query(JobSQL.requeue(id: id, channel: channel)).first else {
                throw JobQueueError(.notFound, "no job \(id.lowercasedString)", jobID: id)
            }
            guard try row.decode("requeued", as: Bool.self) else {
                let old: String = try row.decode("old_status")
                throw JobQueueError(.invalidState, "job \(id.lowercasedString) is \(old); only jobs in error can be retried", jobID: id)
            }
        } catch {
            throw JobQueueError.from(error, jobID: id)
        }
    }
}

final class ChannelCache: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: String?
    var value: String? {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}
