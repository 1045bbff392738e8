import Foundation
import Logging
import Postgres
import ServiceLifecycle

/// A worker's settings. Defaults suit production; tests shorten them.
public struct WorkerConfiguration: Sendable {
    /// This process's id in `workers` and `jobs.worker_id`. Defaults to `host:pid:random`.
    public var id: String
    /// Jobs run at once. Defaults to 2.
    public var concurrency: Int = 2
    /// How often an idle worker looks for jobs when no NOTIFY arrives. Defaults to 1 s.
    public var pollInterval: Duration = .seconds(1)
    /// How often running jobs are heartbeated. Defaults to 10 s.
    public var heartbeatInterval: Duration = .seconds(10)
    /// A running job whose heartbeat is older than this is rescued by the sweep. Defaults to 60 s.
    /// The worker itself gives a job up at `lease - 2 × heartbeatInterval` without an
    /// acknowledged heartbeat (self-fencing), before any sweep can rescue it.
    public var lease: Duration = .seconds(60)
    /// How often this process tries to run the sweep (one process runs it at a time). Defaults to 15 s.
    public var sweepInterval: Duration = .seconds(15)
    /// How far past its deadline a job may be before the sweep ends it. Defaults to 30 s.
    public var stuckGrace: Duration = .seconds(30)
    /// How long running jobs may finish after SIGTERM before they are handed back. Defaults to 30 s.
    public var shutdownGrace: Duration = .seconds(30)
    /// The queue's retry backoff (per-job values override it). Defaults to 1 s · 2ⁿ, capped at 1 h.
    public var backoff = RetryBackoff()
    /// Whether to LISTEN for wake-ups. Defaults to `true`; turn off behind PgBouncer in
    /// transaction mode (polling still finds every job).
    public var listen = true
    /// Cap on the (fully jittered, doubling from 100 ms) delay between reconnect attempts while
    /// the database is away. Defaults to 2 s, so every worker is back within about 2 s of the
    /// server accepting connections, while a fleet never retries in lockstep.
    public var maxReconnectDelay: Duration = .seconds(2)
    /// Most jobs the sweep rescues per statement. Defaults to 500.
    public var sweepBatch = 500
    /// Finished jobs (with their images), emptied batches and gone workers older than this are
    /// deleted by the sweep, a page at a time. Defaults to 7 days; `nil` keeps everything.
    public var retention: Duration? = .seconds(7 * 24 * 3600)
    /// Rows per prune transaction. Defaults to 1,000.
    public var pruneBatch = 1000
    /// Most time one sweep spends pruning; a larger backlog continues at the next sweep.
    /// Defaults to 2 s.
    public var pruneBudget: Duration = .seconds(2)
    /// How often to sample the queue depth (pending and running jobs per priority) into the
    /// `imagejobs_queue_depth` metric; one small query each time. Defaults to `nil` (off):
    /// turn it on where a metrics backend is bootstrapped.
    public var queueDepthSampleInterval: Duration?

    public init(id: String? = nil) {
        let host = ProcessInfo.processInfo.hostName
        self.id = id ?? "\(host):\(getpid()):\(UUID().uuidString.prefix(8).lowercased())"
    }
}

/// Counters a worker keeps (for logs, metrics and tests).
public struct WorkerCounters: Sendable, Equatable {
    public var claimed = 0
    public var completed = 0
    public var failed = 0
    public var retried = 0
    public var timedOut = 0
    public var rescued = 0
    /// Writes refused because the attempt was no longer the job's current one.
    public var staleWrites = 0
    public var leaseLost = 0
    public var released = 0
    /// Finished jobs this process's sweeps deleted (retention).
    public var pruned = 0
    public var claimErrors = 0
}

/// Claims and runs jobs; a ServiceLifecycle `Service`.
///
/// It claims only up to its free slots, in one statement; wakes on NOTIFY and polls as a
/// fallback; heartbeats its running jobs and drops any it no longer owns; runs each job under
/// its deadline (cancelling the handler and freeing the slot at the deadline even if the
/// handler ignores cancellation); runs the fleet-wide sweep when it holds the sweep lock; and
/// survives the database going away, reconnecting with capped, jittered backoff. On graceful
/// shutdown it stops claiming, lets running jobs finish within the grace period, then cancels
/// them and hands them back without charging a retry.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    let pool: PGPool
    let handlers: [String: any JobHandler]
    let logger: Logger
    let state: WorkerState
    let completer: Completer
    let metrics: WorkerMetrics

    public init(pool: PGPool, handlers: [any JobHandler], configuration: WorkerConfiguration, logger: Logger) {
        precondition(configuration.concurrency >= 1, "concurrency must be at least 1")
        self.pool = pool
        var byKind: [String: any JobHandler] = [:]
        for handler in handlers { byKind[handler.kind] = handler }
        self.handlers = byKind
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "worker.id"] = "\(configuration.id)"
        self.logger = logger
        self.metrics = WorkerMetrics(kinds: byKind.keys.sorted())
        let state = WorkerState(metrics: metrics, concurrency: configuration.concurrency)
        self.state = state
        self.completer = Completer(pool: pool, wakeClaimer: { state.wake() })
    }

    /// What the worker has done so far.
    public var counters: WorkerCounters { state.counters }

    /// Runs until cancelled or gracefully shut down.
    public func run() async throws {
        let channel = await resolveChannel()
        await register()
        let listener: PGListener? =
            configuration.listen
            ? PGListener(configuration: pool.configuration, channels: [channel], logger: logger) : nil
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.claimLoop() }
                group.addTask { await self.heartbeatLoop() }
                group.addTask { await self.sweepLoop() }
                group.addTask { await self.deadlineLoop() }
                group.addTask { await self.metricsLoop(listener) }
                if let listener {
                    group.addTask { await self.consume(listener) }
                }
                await group.next()  // the claim loop ends first: on shutdown or cancellation
                listener?.stop()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.state.beginShutdown()
        }
        await finishRunningJobs()
        _ = try? await pool.query(JobSQL.stopWorker(id: configuration.id).named("JobSQL.stopWorker"))
        logger.info("worker stopped", metadata: ["worker.completed": "\(state.counters.completed)"])
    }

    private func resolveChannel() async -> String {
        var attempt = 0
        while !Task.isCancelled {
            do {
                let row = try await pool.query(JobSQL.currentSchema().named("JobSQL.currentSchema"))[0]
                return JobQueue.channel(schema: try row.decode("schema"))
            } catch {
                attempt += 1
                logger.warning("database unavailable; retrying", metadata: ["error": "\(error)"])
                await reconnectDelay(attempt)
            }
        }
        return JobQueue.channel(schema: "public")
    }

    private func register() async {
        var attempt = 0
        let kinds = handlers.keys.sorted()
        while !Task.isCancelled && !state.isShuttingDown {
            do {
                try await pool.query(
                    JobSQL.registerWorker(
                        id: configuration.id, host: ProcessInfo.processInfo.hostName, pid: Int(getpid()),
                        concurrency: configuration.concurrency, kinds: kinds
                    ).named("JobSQL.registerWorker"))
                logger.info("worker started", metadata: ["worker.concurrency": "\(configuration.concurrency)", "worker.kinds": "\(kinds.joined(separator: ","))"])
                return
            } catch {
                attempt += 1
                logger.warning("could not register the worker; retrying", metadata: ["error": "\(error)"])
                await reconnectDelay(attempt)
            }
        }
    }

    /// Capped, fully jittered exponential backoff: 100 ms · 2ⁿ up to the cap.
    private func reconnectDelay(_ attempt: Int) async {
        let capMs = Double(configuration.maxReconnectDelay.milliseconds)
        let ms = Double.random(in: 0...min(capMs, 100 * pow(2, Double(min(attempt, 20)))))
        try? await Task.sleep(for: .milliseconds(Int64(max(ms, 20))))
    }

    // MARK: Claiming

    private func claimLoop() async {
        let kinds = handlers.keys.sorted()
        var failures = 0
        var busyRounds = 0
        // Completions ride along with claims: one statement completes the attempts whose
        // handlers finished and claims as many new jobs as that frees, so a busy worker spends
        // one round trip and one transaction per cycle, not two.
        completer.attach()
        defer { completer.detach() }
        while !Task.isCancelled && !state.isShuttingDown {
            let completions = completer.takeForClaim()
            // Attempts completed by this statement free their slots with it.
            // (Attempts just claimed may still be counted with the ones they replace, so this
            // can be 0 while completions wait: they are written all the same.)
            let free = max(0, configuration.concurrency - state.runningCount + completions.count)
            // At most `maxClaim` per statement (the rest at once in the next): each limit is a
            // prepared statement of its own on the server (see `completeAndClaim`).
            let limit = JobSQL.claimLimit(free)
            var claimedAll = false
            var resolved = completions.isEmpty
            var busy = false
            if limit > 0 || !completions.isEmpty {
                do {
                    let rows = try await pool.query(
                        JobSQL.completeAndClaim(
                            ids: completions.map(\.id), attempts: completions.map(\.attempt),
                            workerID: configuration.id, kinds: kinds, limit: limit
                        ).named("JobSQL.completeAndClaim"))
                    failures = 0
                    var claimed = 0
                    if !completions.isEmpty {
                        let done: [UUID] = try rows.first?.decode("completed_ids") ?? []
                        busy = completer.resolve(completions, completed: Set(done), busy: Set(try rows.first?.decode("busy_ids") ?? []))
                        resolved = true
                    }
                    for row in rows where !row.isNull("id") {
                        let job = try JobSQL.decodeJob(row)
                        let remaining: Double = try row.decode("remaining_s")
                        start(ClaimedJob(job: job, remainingSeconds: remaining))
                        claimed += 1
                    }
                    claimedAll = limit > 0 && claimed == limit
                } catch {
                    if !resolved { completer.fail(completions, error) }
                    // Cancelled mid-statement (the worker is stopping): not a claim failure.
                    if Task.isCancelled { break }
                    failures += 1
                    state.update { $0.claimErrors += 1 }
                    if failures == 1 || failures % 20 == 0 {
                        logger.warning("claim failed; retrying", metadata: ["error": "\(error)", "claim.failures": "\(failures)"])
                    }
                    await reconnectDelay(failures)
                    continue
                }
            }
            if claimedAll { continue }  // more may be waiting; go again at once
            if busy {
                // Completions whose rows another statement held locked went back to the
                // completer; a claimer's lock lasts one statement, so try again in a moment,
                // backing off (up to the poll interval) if something holds the row longer.
                busyRounds += 1
                try? await Task.sleep(for: min(.milliseconds(2) * (1 << min(busyRounds - 1, 10)), configuration.pollInterval))
                continue
            }
            busyRounds = 0
            await state.waitForWake(timeout: configuration.pollInterval)
        }
    }

    private func consume(_ listener: PGListener) async {
        for await event in listener {
            switch event {
            case .connected:
                state.wake()
            case .notification(_, let payload):
                if payload.hasPrefix("cancel") {
                    await checkCancelled()
                } else {
                    state.wake()
                }
            }
        }
    }

    /// After a cancel notification: interrupt running jobs that were cancelled.
    private func checkCancelled() async {
        let running = state.runningAttempts()
        guard !running.isEmpty else { return }
        guard let rows = try? await pool.query(JobSQL.cancelledAmong(ids: running.map(\.0)).named("JobSQL.cancelledAmong"))
        else { return }
        for row in rows {
            if let id: UUID = try? row.decode("id") { state.interrupt(id, reason: .cancelled) }
        }
    }

    // MARK: Running one job

    private func start(_ claimed: ClaimedJob) {
        let job = claimed.job
        state.update { $0.claimed += 1 }
        if let started = job.startedAt {
            metrics.claimed(kind: job.kind, waited: started.timeIntervalSince(job.nextAttemptAt))
        }
        guard let handler = handlers[job.kind] else { return }
        let execution = Execution()
        let deadline = ContinuousClock.now + .milliseconds(Int64(max(0, claimed.remainingSeconds) * 1000))
        state.add(job.id, attempt: job.attempt, execution: execution, deadline: deadline)
        var jobLogger = logger
        jobLogger[metadataKey: "job.id"] = "\(job.id.lowercasedString)"
        jobLogger[metadataKey: "job.kind"] = "\(job.kind)"
        jobLogger[metadataKey: "job.attempt"] = "\(job.attempt)"
        let context = JobContext(logger: jobLogger, pool: pool, workerID: configuration.id)
        let log = jobLogger
        // The bookkeeping task is unstructured on purpose: it must outlive a handler that
        // ignores cancellation, and its writes must not be cut off by that cancellation.
        Task {
            let outcome = await self.runWithDeadline(handler, claimed, context: context, execution: execution, deadline: deadline)
            await self.record(outcome, for: job, logger: log)
            self.state.remove(job.id)
            self.state.wake()
        }
    }

    enum Outcome: Sendable {
        case success(JobResult)
        case failure(any Error)
        case timedOut
        case interrupted(Interruption)
    }

    enum Interruption: Sendable {
        /// The job is no longer this attempt's (rescued or cancelled): write nothing.
        case leaseLost
        /// Cancelled by a user: its row already says so.
        case cancelled
        /// Graceful shutdown ran out of grace: hand the job back.
        case shutdown
    }

    private func runWithDeadline(
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

    private func record(_ outcome: Outcome, for job: Job, logger: Logger) async {
        switch outcome {
        case .success(let result):
            let done: Bool?
            do {
                done = try await writeUntilLeaseLost(logger) { () async throws -> Bool in
                    guard let store = result.store else {
                        // Nothing to store with it: completions of many jobs share one statement.
                        return try await self.completer.complete(job.id, attempt: job.attempt)
                    }
                    return try await self.pool.withTransaction { conn in
                        let rows = try await conn.query(JobSQL.complete(ids: [job.id], attempts: [job.attempt]).named("JobSQL.complete"))
                        guard rows.count == 1 else { return false }
                        try await store(conn)
                        return true
                    }
                }
            } catch {
                // Storing the result failed for a reason a retry of the write won't fix: the
                // attempt fails (and is retried per the job's policy) instead.
                logger.warning("could not store the job's result", metadata: ["error": "\(error)"])
                await fail(job, message: Self.truncate("could not store the result: \(error)"), permanent: false, timedOut: false, logger: logger)
                return
            }
            if done == true {
                state.update { $0.completed += 1 }
                logger.debug("job completed")
            } else if done == false {
                state.update { $0.staleWrites += 1 }
                logger.info("job completed after its attempt was superseded; result dropped")
            }
        case .failure(let error):
            let failure = error as? JobFailure
            let cancelled = error is CancellationError
            let message = Self.truncate(failure?.message ?? (cancelled ? "the handler was cancelled" : "\(error)"))
            await fail(job, message: message, permanent: failure?.permanent ?? false, timedOut: false, logger: logger)
        case .timedOut:
            await fail(job, message: "", permanent: true, timedOut: true, logger: logger)
        case .interrupted(.shutdown):
            let released = try? await writeUntilLeaseLost(logger) { () async throws -> Bool in
                try await self.pool.query(JobSQL.release(id: job.id, attempt: job.attempt).named("JobSQL.release")).count == 1
            }
            if released == true { state.update { $0.released += 1 } }
            logger.info("job handed back at shutdown")
        case .interrupted(.leaseLost), .interrupted(.cancelled):
            state.update { $0.leaseLost += 1 }
            logger.info("job dropped: the attempt is no longer this worker's")
        }
    }

    private func fail(_ job: Job, message: String, permanent: Bool, timedOut: Bool, logger: Logger) async {
        let result: PGRow??
        do {
            result = try await writeUntilLeaseLost(logger) { () async throws -> PGRow? in
                try await self.pool.query(
                    JobSQL.fail(
                        id: job.id, attempt: job.attempt, message: message, permanent: permanent, timedOut: timedOut,
                        backoff: self.configuration.backoff
                    ).named("JobSQL.fail")
                ).first
            }
        } catch {
            logger.error("could not record the job's failure; the sweep will rescue it", metadata: ["error": "\(error)"])
            return
        }
        guard let result else { return }
        guard let row = result else {
            state.update { $0.staleWrites += 1 }
            return
        }
        let status = (try? row.decode("status", as: JobStatus.self)) ?? .error
        state.update {
            $0.failed += 1
            if timedOut { $0.timedOut += 1 }
            if status == .pending { $0.retried += 1 }
        }
        logger.info(timedOut ? "job timed out" : status == .pending ? "job failed; retry scheduled" : "job failed for good",
                    metadata: ["job.status": "\(status.rawValue)"])
    }

    /// Retries a bookkeeping write while the database is away, for as long as the attempt
    /// could still be this worker's (its lease); returns `nil` when it gave up. An error that a
    /// retry cannot fix (not a connection or transient failure) is thrown at once.
    private func writeUntilLeaseLost<T: Sendable>(_ logger: Logger, _ write: @Sendable () async throws -> T) async throws -> T? {
        let giveUp = ContinuousClock.now + configuration.lease
        var attempt = 0
        while true {
            do {
                return try await write()
            } catch {
                let underlying = (error as? PGTransactionError)?.underlying ?? error
                guard let pg = underlying as? PGError, pg.isTransient || pg.invalidatesConnection else { throw underlying }
                attempt += 1
                if ContinuousClock.now >= giveUp {
                    logger.warning("could not record the job's outcome; the sweep will rescue it", metadata: ["error": "\(error)"])
                    return nil
                }
                await reconnectDelay(attempt)
            }
        }
    }

    static func truncate(_ message: String) -> String {
        message.count <= 2000 ? message : String(message.prefix(2000)) + "…"
    }

    // MARK: Heartbeats and the sweep

    private func heartbeatLoop() async {
        var lastAck = ContinuousClock.now
        let fence = configuration.lease - configuration.heartbeatInterval * 2
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.heartbeatInterval)
            if Task.isCancelled { return }
            let running = state.runningAttempts()
            let sent = ContinuousClock.now
            do {
                let rows = try await pool.query(
                    JobSQL.heartbeat(workerID: configuration.id, ids: running.map(\.0), attempts: running.map(\.1))
                        .named("JobSQL.heartbeat"))
                lastAck = sent
                let owned = Set(try rows.map { try $0.decode("id", as: UUID.self) })
                for (id, attempt) in running where !owned.contains(id) {
                    state.interrupt(id, attempt: attempt, reason: .leaseLost)
                }
            } catch {
                logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
                if ContinuousClock.now - lastAck >= fence {
                    // Give the jobs up before the sweep can rescue them elsewhere.
                    for (id, attempt) in state.runningAttempts() { state.interrupt(id, attempt: attempt, reason: .leaseLost) }
                }
            }
        }
    }

    /// Ends attempts whose deadline passed (checked every 50 ms), cancelling their handlers.
    private func deadlineLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            state.expire(now: .now)
        }
    }

    /// Forwards reconnects (pool and listener) to the metrics every few seconds, and samples
    /// the queue depth when ``WorkerConfiguration/queueDepthSampleInterval`` is set.
    private func metricsLoop(_ listener: PGListener?) async {
        var reported = 0
        var lastSample: ContinuousClock.Instant?
        while !Task.isCancelled {
            let reconnects = await pool.connectionsLost + (listener?.reconnects ?? 0)
            if reconnects > reported {
                metrics.reconnected(reconnects - reported)
                reported = reconnects
            }
            if let interval = configuration.queueDepthSampleInterval,
               lastSample.map({ ContinuousClock.now - $0 >= interval }) ?? true {
                lastSample = ContinuousClock.now
                if let rows = try? await pool.query(JobSQL.queueDepth().named("JobSQL.queueDepth")) {
                    metrics.queueDepth(rows.compactMap { row in
                        guard let status = try? row.decode("status", as: JobStatus.self),
                              let priority = try? row.decode("priority", as: JobPriority.self),
                              let n = try? row.decode("jobs", as: Int.self) else { return nil }
                        return (status, priority, n)
                    })
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    private func sweepLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.sweepInterval)
            if Task.isCancelled { return }
            _ = try? await sweepOnce()
        }
    }

    /// Runs the sweep now if no other process is: rescues lost and overdue jobs and folds the
    /// position counts. Returns how many jobs it rescued, or `nil` when another process holds
    /// the sweep lock.
    @discardableResult
    public func sweepOnce() async throws -> Int? {
        let maintenance = Maintenance(pool: pool, lease: configuration.lease, stuckGrace: configuration.stuckGrace,
                                      backoff: configuration.backoff, batch: configuration.sweepBatch, logger: logger)
        let rescued = try await maintenance.runOnce()
        if let rescued { state.update { $0.rescued += rescued } }
        // The process that won the sweep also prunes, in transactions of its own: the sweep's
        // lock is not held meanwhile, and each page commits on its own.
        if rescued != nil, let retention = configuration.retention {
            do {
                let pruned = try await maintenance.prune(
                    olderThan: retention, batch: configuration.pruneBatch, budget: configuration.pruneBudget)
                if pruned.jobs > 0 { state.update { $0.pruned += pruned.jobs } }
            } catch {
                logger.warning("pruning finished jobs failed; trying again at the next sweep", metadata: ["error": "\(error)"])
            }
        }
        return rescued
    }

    private func finishRunningJobs() async {
        let deadline = ContinuousClock.now + configuration.shutdownGrace
        while state.runningCount > 0 && ContinuousClock.now < deadline {
            await state.waitForWake(timeout: .milliseconds(100))
        }
        for (id, _) in state.runningAttempts() { state.interrupt(id, reason: .shutdown) }
        while state.runningCount > 0 {
            await state.waitForWake(timeout: .milliseconds(100))
        }
    }
}

/// The fleet-wide maintenance: one process at a time (a transaction-scoped advisory lock).
public struct Maintenance: Sendable {
    let pool: PGPool
    let lease: Duration
    let stuckGrace: Duration
    let backoff: RetryBackoff
    let batch: Int
    let logger: Logger

    /// The defaults are the worker's (``WorkerConfiguration``); pruning alone needs none of them.
    public init(
        pool: PGPool, lease: Duration = .seconds(60), stuckGrace: Duration = .seconds(30), backoff: RetryBackoff = RetryBackoff(),
        batch: Int = 500, logger: Logger
    ) {
        self.pool = pool
        self.lease = lease
        self.stuckGrace = stuckGrace
        self.backoff = backoff
        self.batch = batch
        self.logger = logger
    }

    /// Rescues stale and overdue jobs (page by page) and folds the position counts; `nil`
    /// when another process holds the sweep lock.
    public func runOnce() async throws -> Int? {
        let result: Int? = try await pool.withTransaction { conn in
            guard try await conn.query(JobSQL.trySweepLock().named("JobSQL.trySweepLock"))[0].decode("ok", as: Bool.self) else {
                return nil
            }
            var rescued = 0
            while true {
                let rows = try await conn.query(
                    JobSQL.rescue(lease: lease, grace: stuckGrace, backoff: backoff, limit: batch).named("JobSQL.rescue"))
                rescued += rows.count
                for row in rows {
                    let overdue = (try? row.decode("overdue", as: Bool.self)) ?? false
                    logger.info(overdue ? "sweep ended an overdue job" : "sweep rescued a job from a lost worker",
                                metadata: ["job.id": "\((try? row.decode("id", as: UUID.self))?.lowercasedString ?? "?")",
                                           "job.status": "\((try? row.decode("status", as: String.self)) ?? "?")"])
                }
                if rows.count < batch { break }
            }
            try await conn.query(JobSQL.foldCounts().named("JobSQL.foldCounts"))
            try await conn.query(JobSQL.trimCounts().named("JobSQL.trimCounts"))
            return rescued
        }
        return result
    }

    /// Deletes finished jobs (and their images), emptied batches and gone workers older than
    /// `olderThan`, `batch` rows per transaction, until nothing is left or `budget` is spent.
    /// Each transaction runs under a 5 s statement timeout and a 1 s lock timeout, and its row
    /// locks skip what others hold, so pruning never makes a claim or a completion wait.
    /// With `dryRun`, counts what a full prune would delete and deletes nothing.
    public func prune(olderThan: Duration, batch: Int = 1000, dryRun: Bool = false, budget: Duration? = nil) async throws -> PruneResult {
        let started = ContinuousClock.now
        var total = PruneResult()
        while true {
            let page: PruneResult = try await pool.withTransaction { conn in
                try await conn.setLocalStatementTimeout(.seconds(5))
                try await conn.query("SET LOCAL lock_timeout = '1s'".named("Maintenance.pruneLockTimeout"))
                let row = try await conn.query(JobSQL.prune(olderThan: olderThan, limit: batch, dryRun: dryRun).named("JobSQL.prune"))[0]
                return PruneResult(
                    jobs: try row.decode("jobs"), images: try row.decode("images"),
                    batches: try row.decode("batches"), workers: try row.decode("workers"), transactions: 1)
            }
            total.add(page)
            if dryRun || max(page.jobs, page.batches, page.workers) < batch { break }
            if let budget, ContinuousClock.now - started >= budget { break }
        }
        if total.jobs + total.batches + total.workers > 0 && !dryRun {
            logger.info("pruned finished jobs", metadata: [
                "prune.jobs": "\(total.jobs)", "prune.images": "\(total.images)",
                "prune.batches": "\(total.batches)", "prune.workers": "\(total.workers)",
            ])
        }
        return total
    }
}

/// What a prune deleted (or, in a dry run, would delete).
public struct PruneResult: Sendable, Equatable, Codable {
    public var jobs = 0
    public var images = 0
    public var batches = 0
    public var workers = 0
    /// Transactions it took (one page each).
    public var transactions = 0

    public init(jobs: Int = 0, images: Int = 0, batches: Int = 0, workers: Int = 0, transactions: Int = 0) {
        self.jobs = jobs
        self.images = images
        self.batches = batches
        self.workers = workers
        self.transactions = transactions
    }

    mutating func add(_ other: PruneResult) {
        jobs += other.jobs
        images += other.images
        batches += other.batches
        workers += other.workers
        transactions += other.transactions
    }
}

/// One attempt's outcome slot: the first of handler result, deadline or interruption wins.
final class Execution: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Worker.Outcome?
    private var waiter: CheckedContinuation<Worker.Outcome, Never>?

    func finish(_ outcome: Worker.Outcome) {
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

    func outcome() async -> Worker.Outcome {
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

/// The worker's mutable state behind a lock: running attempts, counters and the wake signal.
final class WorkerState: @unchecked Sendable {
    private let lock = NSLock()
    private var running: [UUID: (attempt: Int, execution: Execution, deadline: ContinuousClock.Instant)] = [:]
    private var shuttingDown = false
    private var pendingWake = false
    private var waiter: (id: UInt64, continuation: CheckedContinuation<Void, Never>)?
    private var nextWaiter: UInt64 = 0
    private var expiredWaiter: UInt64 = 0
    private(set) var countersStorage = WorkerCounters()
    private let metrics: WorkerMetrics
    private let concurrency: Int

    init(metrics: WorkerMetrics, concurrency: Int) {
        self.metrics = metrics
        self.concurrency = concurrency
        metrics.slots(free: concurrency, running: 0)
    }

    var counters: WorkerCounters { lock.lock(); defer { lock.unlock() }; return countersStorage }
    var runningCount: Int { lock.lock(); defer { lock.unlock() }; return running.count }
    var isShuttingDown: Bool { lock.lock(); defer { lock.unlock() }; return shuttingDown }

    func update(_ body: (inout WorkerCounters) -> Void) {
        lock.lock()
        let old = countersStorage
        body(&countersStorage)
        let new = countersStorage
        lock.unlock()
        metrics.forward(from: old, to: new)
    }

    func beginShutdown() {
        lock.lock()
        shuttingDown = true
        lock.unlock()
        wake()
    }

    func add(_ id: UUID, attempt: Int, execution: Execution, deadline: ContinuousClock.Instant) {
        lock.lock()
        running[id] = (attempt, execution, deadline)
        let count = running.count
        lock.unlock()
        metrics.slots(free: max(0, concurrency - count), running: count)
    }

    /// Times out every running attempt whose deadline is past.
    func expire(now: ContinuousClock.Instant) {
        lock.lock()
        let due = running.values.filter { $0.deadline <= now }.map(\.execution)
        lock.unlock()
        for execution in due { execution.finish(.timedOut) }
    }

    func remove(_ id: UUID) {
        lock.lock()
        running[id] = nil
        let count = running.count
        lock.unlock()
        metrics.slots(free: max(0, concurrency - count), running: count)
    }

    func runningAttempts() -> [(UUID, Int)] {
        lock.lock()
        defer { lock.unlock() }
        return running.map { ($0.key, $0.value.attempt) }
    }

    /// Interrupts the running attempt of job `id`; with `attempt`, only that attempt (an answer
    /// about an earlier attempt must not stop the retry this worker may already be running).
    func interrupt(_ id: UUID, attempt: Int? = nil, reason: Worker.Interruption) {
        lock.lock()
        let entry = running[id]
        lock.unlock()
        guard let entry, attempt == nil || entry.attempt == attempt else { return }
        entry.execution.finish(.interrupted(reason))
    }

    /// Wakes the claim loop (a slot freed, a NOTIFY arrived); wake-ups coalesce.
    func wake() {
        lock.lock()
        if let waiter {
            self.waiter = nil
            lock.unlock()
            waiter.continuation.resume()
        } else {
            pendingWake = true
            lock.unlock()
        }
    }

    /// Waits for ``wake()`` or the timeout, whichever is first.
    func waitForWake(timeout: Duration) async {
        guard let id = takeWakeOrReserve() else { return }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.timeOut(id)
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            lock.lock()
            if pendingWake || expiredWaiter == id {
                pendingWake = false
                lock.unlock()
                continuation.resume()
            } else {
                waiter = (id, continuation)
                lock.unlock()
            }
        }
        timer.cancel()
    }

    /// Consumes a pending wake-up (`nil`), or reserves a waiter id.
    private func takeWakeOrReserve() -> UInt64? {
        lock.lock()
        defer { lock.unlock() }
        if pendingWake {
            pendingWake = false
            return nil
        }
        nextWaiter += 1
        return nextWaiter
    }

    private func timeOut(_ id: UInt64) {
        lock.lock()
        if let waiter, waiter.id == id {
            self.waiter = nil
            lock.unlock()
            waiter.continuation.resume()
        } else {
            expiredWaiter = id  // fired before the waiter was registered
            lock.unlock()
        }
    }
}

/// Gathers completions and gets them written many to a statement, fenced per job.
///
/// While the claim loop runs (attached), completions ride with its next claim statement, which
/// a completion wakes at once; otherwise (shutdown) the completer writes them itself, one
/// statement in flight at a time, the next ones gathering meanwhile. Each job still gets its
/// own answer (completed, or stale).
final class Completer: @unchecked Sendable {
    struct Pending {
        var id: UUID
        var attempt: Int
        var continuation: CheckedContinuation<Bool, any Error>
    }
    private let pool: PGPool
    private let wakeClaimer: @Sendable () -> Void
    private let lock = NSLock()
    private var pending: [Pending] = []
    private var flushing = false
    /// Whether the claim loop takes completions with its claims (it runs and has not stopped).
    private var attached = false
    /// Most completions per statement.
    static let maxBatch = 500

    init(pool: PGPool, wakeClaimer: @escaping @Sendable () -> Void) {
        self.pool = pool
        self.wakeClaimer = wakeClaimer
    }

    /// Marks one attempt completed; `false` when the attempt is no longer the job's current one.
    /// While the claim loop runs, the completion rides with its next claim (woken now);
    /// otherwise (shutdown) it is written on its own, batched with any others waiting.
    func complete(_ id: UUID, attempt: Int) async throws -> Bool {
        try await withCheckedThrowingContinuation { continuation in
            lock.lock()
            pending.append(Pending(id: id, attempt: attempt, continuation: continuation))
            let ride = attached
            let start = !ride && !flushing
            if start { flushing = true }
            lock.unlock()
            if ride { wakeClaimer() }
            if start { Task { await self.flushLoop() } }
        }
    }

    func attach() {
        lock.lock()
        attached = true
        lock.unlock()
    }

    /// The claim loop stopped: write what is waiting (and whatever comes) without it.
    func detach() {
        lock.lock()
        attached = false
        let start = !pending.isEmpty && !flushing
        if start { flushing = true }
        lock.unlock()
        if start { Task { await self.flushLoop() } }
    }

    /// The completions the claim loop's next statement carries.
    func takeForClaim() -> [Pending] {
        lock.lock()
        defer { lock.unlock() }
        let batch = Array(pending.prefix(Self.maxBatch))
        pending.removeFirst(batch.count)
        return batch
    }

    /// Answers each completion of `batch`: completed, or stale; those in `busy` (rows held
    /// locked by another statement at that instant) go back to the front of the queue for the
    /// next statement. Returns whether any went back.
    @discardableResult
    func resolve(_ batch: [Pending], completed: Set<UUID>, busy: Set<UUID> = []) -> Bool {
        var again: [Pending] = []
        for item in batch {
            if completed.contains(item.id) {
                item.continuation.resume(returning: true)
            } else if busy.contains(item.id) {
                again.append(item)
            } else {
                item.continuation.resume(returning: false)
            }
        }
        guard !again.isEmpty else { return false }
        lock.lock()
        pending.insert(contentsOf: again, at: 0)
        lock.unlock()
        return true
    }

    func fail(_ batch: [Pending], _ error: any Error) {
        for item in batch { item.continuation.resume(throwing: error) }
    }

    private func take() -> [Pending] {
        lock.lock()
        defer { lock.unlock() }
        if pending.isEmpty || attached {
            flushing = false
            if attached && !pending.isEmpty { wakeClaimer() }
            return []
        }
        let batch = Array(pending.prefix(Self.maxBatch))
        pending.removeFirst(batch.count)
        return batch
    }

    private func flushLoop() async {
        while true {
            let batch = take()
            if batch.isEmpty { return }
            do {
                let rows = try await pool.query(
                    JobSQL.complete(ids: batch.map(\.id), attempts: batch.map(\.attempt)).named("JobSQL.complete"))
                resolve(batch, completed: Set(try rows.map { try $0.decode("id", as: UUID.self) }))
            } catch {
                fail(batch, error)
            }
        }
    }
}
