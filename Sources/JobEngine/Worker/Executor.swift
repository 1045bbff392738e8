import Foundation
import Logging
import Postgres
import Tracing

/// The worker's executor: runs one claimed attempt under its deadline (cancelling the handler
/// and freeing the slot at the deadline even if the handler ignores cancellation) and records
/// its outcome, every write fenced by the attempt.
final class Executor: Sendable {
    let pool: PGPool
    let configuration: WorkerConfiguration
    let handlers: [String: any JobHandler]
    let state: WorkerState
    let completer: Completer
    let metrics: WorkerMetrics
    let logger: Logger
    let tracer: any Tracer

    init(
        pool: PGPool, configuration: WorkerConfiguration, handlers: [String: any JobHandler], state: WorkerState,
        completer: Completer, metrics: WorkerMetrics, logger: Logger, tracer: any Tracer
    ) {
        self.pool = pool
        self.configuration = configuration
        self.handlers = handlers
        self.state = state
        self.completer = completer
        self.metrics = metrics
        self.logger = logger
        self.tracer = tracer
    }

    /// Takes a claimed attempt and runs it in the background. Its slot is taken before this
    /// returns, so the next claim counts it.
    func start(_ claimed: ClaimedJob) {
        guard let attempt = admit(claimed) else { return }
        // The bookkeeping task is unstructured on purpose: it must outlive a handler that
        // ignores cancellation, and its writes must not be cut off by that cancellation.
        Task {
            await self.finish(attempt)
            self.state.wake()
        }
    }

    /// Runs a claimed attempt to its recorded end; `nil` when this worker has no handler for
    /// its kind (the claim only takes kinds it has).
    @discardableResult
    func runOnce(_ claimed: ClaimedJob) async -> Outcome? {
        guard let attempt = admit(claimed) else { return nil }
        return await finish(attempt)
    }

    /// An attempt taken into a slot, ready to run.
    private struct Admitted: Sendable {
        let claimed: ClaimedJob
        let handler: any JobHandler
        let execution: Execution
        let deadline: ContinuousClock.Instant
        let logger: Logger
    }

    private func admit(_ claimed: ClaimedJob) -> Admitted? {
        let job = claimed.job
        state.update { $0.claimed += 1 }
        if let started = job.startedAt {
            metrics.claimed(kind: job.kind, waited: started.timeIntervalSince(job.nextAttemptAt))
        }
        guard let handler = handlers[job.kind] else { return nil }
        let execution = Execution()
        let deadline = ContinuousClock.now + .milliseconds(Int64(max(0, claimed.remainingSeconds) * 1000))
        state.add(job.id, attempt: job.attempt, execution: execution, deadline: deadline)
        var jobLogger = logger
        jobLogger[metadataKey: "job.id"] = "\(job.id.lowercasedString)"
        jobLogger[metadataKey: "job.kind"] = "\(job.kind)"
        jobLogger[metadataKey: "job.attempt"] = "\(job.attempt)"
        return Admitted(claimed: claimed, handler: handler, execution: execution, deadline: deadline, logger: jobLogger)
    }

    @discardableResult
    private func finish(_ attempt: Admitted) async -> Outcome {
        let job = attempt.claimed.job
        let context = JobContext(logger: attempt.logger, pool: pool, workerID: configuration.id) { [state] step, total in
            state.reportProgress(job.id, attempt: job.attempt, step: step, total: total)
        }
        // The run joins the trace of the request that submitted the job.
        let submitter = JobTraceContext.context(attempt.claimed.traceContext, tracer: tracer)
        let outcome = await tracer.withSpan("job.run", context: submitter, ofKind: .consumer) { span in
            span.attributes["job.id"] = job.id.lowercasedString
            span.attributes["job.kind"] = job.kind
            span.attributes["job.attempt"] = job.attempt
            let outcome = await self.runWithDeadline(
                attempt.handler, attempt.claimed, context: context, execution: attempt.execution, deadline: attempt.deadline)
            span.attributes["job.outcome"] = outcome.name
            if case .failure(let error) = outcome { span.recordError(error) }
            await self.record(outcome, for: job, logger: attempt.logger)
            return outcome
        }
        state.remove(job.id)
        return outcome
    }

    enum Outcome: Sendable {
        case success(JobResult)
        case failure(any Error)
        case timedOut
        case interrupted(Interruption)

        /// For spans and logs.
        var name: String {
            switch self {
            case .success: "completed"
            case .failure: "failed"
            case .timedOut: "timed_out"
            case .interrupted(.leaseLost): "lease_lost"
            case .interrupted(.cancelled): "cancelled"
            case .interrupted(.shutdown): "released"
            }
        }
    }

    enum Interruption: Sendable {
        /// The job is no longer this attempt's (rescued or cancelled): write nothing.
        case leaseLost
        /// Cancelled by a user: its row already says so.
        case cancelled
        /// Graceful shutdown ran out of grace: hand the job back.
        case shutdown
    }

    func runWithDeadline(
        _ handler: any JobHandler, _ claimed: ClaimedJob, context: JobContext, execution: Execution,
        deadline: ContinuousClock.Instant
    ) async -> Outcome {
        let metrics = self.metrics
        let handlerTask = Task {
            let started = ContinuousClock.now
            defer { metrics.handlerFinished(kind: claimed.job.kind, after: ContinuousClock.now - started) }
            do {
                execution.finish(.success(try await handler.run(claimed, context: context)))
            } catch {
                // A failure that arrives at or after the deadline is the deadline's doing (a
                // client timeout racing the deadline loop's 50 ms tick): it is a timeout.
                execution.finish(ContinuousClock.now >= deadline ? .timedOut : .failure(error))
            }
        }
        // The deadline is watched by ``deadlineLoop()``, not by a sleeping task per job: a
        // cancelled sleep keeps its timer (and the task) alive until the full timeout elapses,
        // which would hold minutes of finished jobs in memory.
        let outcome = await execution.outcome()
        switch outcome {
        case .success, .failure: break
        case .timedOut, .interrupted: handlerTask.cancel()  // not awaited: the slot frees now
        }
        return outcome
    }

    func record(_ outcome: Outcome, for job: Job, logger: Logger) async {
        switch outcome {
        case .success(let result):
            let done: Written<Bool>
            do {
                done = try await writeUntilLeaseLost(logger) { () async throws -> Bool in
                    guard let store = result.store else {
                        // Nothing to store with it: completions of many jobs share one statement.
                        return try await self.completer.complete(job.id, attempt: job.attempt)
                    }
                    return try await self.pool.withTransaction { conn in
                        let rows = try await conn.query(JobSQL.complete(ids: [job.id], attempts: [job.attempt]))
                        guard rows.count == 1 else { return false }
                        try await store(conn)
                        return true
                    }
                }
            } catch {
                // Storing the result failed for a reason a retry of the write won't fix: the
                // attempt fails (and is retried per the job's policy) instead.
                logger.warning("could not store the job's result", metadata: ["error": "\(error)"])
                await fail(job, .failed(message: Self.truncate("could not store the result: \(error)"), permanent: false), logger: logger)
                return
            }
            switch done {
            case .done(true):
                state.update { $0.completed += 1 }
                logger.debug("job completed")
            case .done(false):
                state.update { $0.staleWrites += 1 }
                logger.info("job completed after its attempt was superseded; result dropped")
            case .gaveUp:
                break
            }
        case .failure(let error):
            let failure = error as? JobFailure
            let cancelled = error is CancellationError
            let message = Self.truncate(failure?.message ?? (cancelled ? "the handler was cancelled" : "\(error)"))
            if let failure, let after = failure.retryAfter {
                await fail(job, .deferred(message: message, after: after), logger: logger)
            } else {
                await fail(job, .failed(message: message, permanent: failure?.permanent ?? false), logger: logger)
            }
        case .timedOut:
            await fail(job, .timedOut, logger: logger)
        case .interrupted(.shutdown):
            let released = try? await writeUntilLeaseLost(logger) { () async throws -> Bool in
                try await self.pool.query(JobSQL.release(id: job.id, attempt: job.attempt)).count == 1
            }
            if case .done(true)? = released { state.update { $0.released += 1 } }
            logger.info("job handed back at shutdown")
        case .interrupted(.leaseLost), .interrupted(.cancelled):
            state.update { $0.leaseLost += 1 }
            logger.info("job dropped: the attempt is no longer this worker's")
        }
    }

    /// Records a failed attempt: a retry after backoff, or `error` when it was the last, a
    /// permanent failure or a timeout.
    func fail(_ job: Job, _ failure: AttemptFailure, logger: Logger) async {
        let written: Written<JobStatus?>
        do {
            written = try await writeUntilLeaseLost(logger) { () async throws -> JobStatus? in
                let rows = try await self.pool.query(
                    JobSQL.fail(id: job.id, attempt: job.attempt, failure, backoff: self.configuration.backoff))
                return try rows.first?.decode("status", as: JobStatus.self)
            }
        } catch {
            logger.error("could not record the job's failure; the sweep will rescue it", metadata: ["error": "\(error)"])
            return
        }
        guard case .done(let recorded) = written else { return }
        guard let status = recorded else {
            // No row of this attempt was running any more: another process decided first.
            state.update { $0.staleWrites += 1 }
            return
        }
        let timedOut = if case .timedOut = failure { true } else { false }
        state.update {
            $0.failed += 1
            if timedOut { $0.timedOut += 1 }
            if status == .pending { $0.retried += 1 }
        }
        logger.info(timedOut ? "job timed out" : status == .pending ? "job failed; retry scheduled" : "job failed for good",
                    metadata: ["job.status": "\(status.rawValue)"])
    }

    /// Retries a bookkeeping write while the database is away, for as long as the attempt
    /// could still be this worker's (its lease). An error that a retry cannot fix (not a
    /// connection or transient failure) is thrown at once.
    func writeUntilLeaseLost<T: Sendable>(_ logger: Logger, _ write: @Sendable () async throws -> T) async throws -> Written<T> {
        let giveUp = ContinuousClock.now + configuration.lease
        var attempt = 0
        while true {
            do {
                return .done(try await write())
            } catch {
                let underlying = (error as? PGTransactionError)?.underlying ?? error
                guard let pg = underlying as? PGError, pg.isTransient || pg.invalidatesConnection else { throw underlying }
                attempt += 1
                if ContinuousClock.now >= giveUp {
                    logger.warning("could not record the job's outcome; the sweep will rescue it", metadata: ["error": "\(error)"])
                    return .gaveUp
                }
                await configuration.reconnectDelay(attempt)
            }
        }
    }

    static func truncate(_ message: String) -> String {
        message.count <= 2000 ? message : String(message.prefix(2000)) + "…"
    }
}

/// One attempt's outcome slot: the first of handler result, deadline or interruption wins.
final class Execution: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Executor.Outcome?
    private var waiter: CheckedContinuation<Executor.Outcome, Never>?

    func finish(_ outcome: Executor.Outcome) {
        lock.lock()
        guard result == nil else {
            lock.unlock()
            return
        }
        result = outcome
        let waiter = self.waiter
        self.waiter = nil
        lock.unlock()
        waiter?.resume(returning: outcome)
    }

    func outcome() async -> Executor.Outcome {
        await withCheckedContinuation { continuation in
            lock.lock()
            if let result {
                lock.unlock()
                continuation.resume(returning: result)
            } else {
                waiter = continuation
                lock.unlock()
            }
        }
    }
}

/// Why an attempt failed, as it is recorded.
enum AttemptFailure: Sendable {
    /// The handler failed: retried per the job's policy unless `permanent`.
    case failed(message: String, permanent: Bool)
    /// The attempt ran past its deadline: `error` with the timeout message, not retried.
    case timedOut
    /// The backend asked to be called later: the job waits `after`, no retry charged.
    case deferred(message: String, after: Duration)
}

/// How a bookkeeping write ended.
enum Written<T: Sendable>: Sendable {
    case done(T)
    /// The database stayed away for the whole lease: the sweep will rescue the job.
    case gaveUp
}
