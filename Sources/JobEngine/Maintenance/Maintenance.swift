import Foundation
import Logging
import Postgres
import ServiceLifecycle

/// Settings of the fleet-wide maintenance. The defaults are the worker's.
public struct MaintenanceConfiguration: Sendable, Equatable {
    /// How often this process tries to lead a round (one process at a time does). Defaults to 15 s.
    public var interval: Duration
    /// A running job whose heartbeat is older than this is rescued: the workers' lease.
    /// Defaults to 60 s.
    public var lease: Duration
    /// How far past its deadline a job may be before the sweep ends it. Defaults to 30 s.
    public var stuckGrace: Duration
    /// The backoff before a rescued job's retry: the queue's. Defaults to 1 s · 2ⁿ.
    public var backoff: RetryBackoff
    /// Most jobs rescued per statement. Defaults to 500.
    public var rescueBatch: Int
    /// Finished jobs (with their results), emptied batches and gone workers older than this
    /// are deleted after each sweep this process leads. Defaults to 7 days; `nil` keeps all.
    public var retention: Duration?
    /// Rows per prune transaction. Defaults to 1,000.
    public var pruneBatch: Int
    /// Most time one round spends pruning; a larger backlog continues at the next round.
    /// Defaults to 2 s.
    public var pruneBudget: Duration
    /// How often the process leading admission runs a round: the most a delayed job, or one
    /// under a cap or rate limit, waits past its gate opening. Defaults to 100 ms. A process
    /// not leading tries to take over every second.
    public var admitInterval: Duration

    public init(
        interval: Duration = .seconds(15), lease: Duration = .seconds(60), stuckGrace: Duration = .seconds(30),
        backoff: RetryBackoff = RetryBackoff(), rescueBatch: Int = 500, retention: Duration? = .seconds(7 * 24 * 3600),
        pruneBatch: Int = 1000, pruneBudget: Duration = .seconds(2), admitInterval: Duration = .milliseconds(100)
    ) {
        self.interval = interval
        self.lease = lease
        self.stuckGrace = stuckGrace
        self.backoff = backoff
        self.rescueBatch = rescueBatch
        self.retention = retention
        self.pruneBatch = pruneBatch
        self.pruneBudget = pruneBudget
        self.admitInterval = admitInterval
    }
}

/// What one maintenance round did.
public struct MaintenanceRound: Sendable, Equatable, Codable {
    /// Whether this process led the round; `false` when another held the sweep lock, and then
    /// nothing was done.
    public var led: Bool
    /// Jobs rescued from lost workers or ended past their deadline.
    public var rescued: Int
    /// What retention deleted.
    public var pruned: PruneResult
    /// What the admission round run with it did (`nil` when another process leads admission).
    public var admission: AdmissionRound?

    public init(led: Bool, rescued: Int = 0, pruned: PruneResult = PruneResult(), admission: AdmissionRound? = nil) {
        self.led = led
        self.rescued = rescued
        self.pruned = pruned
        self.admission = admission
    }
}

/// What one admission round did.
public struct AdmissionRound: Sendable, Equatable, Codable {
    /// Waiting jobs made claimable: due, under their caps and rate limits, not paused.
    public var admitted: Int
    /// Batches whose last job finished since the last round.
    public var batchesFinished: Int

    enum CodingKeys: String, CodingKey {
        case admitted, batchesFinished = "batches_finished"
    }
}

/// The fleet-wide maintenance, a ServiceLifecycle `Service`. Every `interval` it tries to lead
/// a round: the sweep (rescue, then fold the position counts) under a transaction-scoped
/// advisory lock, so one process at a time leads and a crashed leader's lock ends with its
/// connection; then, outside that lock, retention's prune. Beside it, admission: every
/// `admitInterval` the process holding the admitter's lock (taken the same way) makes waiting
/// jobs claimable and records finished batches. Every worker runs both unless told not to
/// (`imagejobs worker --no-maintenance`); `imagejobs maintain` runs them alone.
public struct Maintenance: Service, Sendable {
    public let configuration: MaintenanceConfiguration
    let pool: PGPool
    let logger: Logger
    let onRound: @Sendable (MaintenanceRound) -> Void

    /// - Parameter onRound: told of every round this process led (the worker counts them).
    public init(
        pool: PGPool, configuration: MaintenanceConfiguration = MaintenanceConfiguration(), logger: Logger,
        onRound: @escaping @Sendable (MaintenanceRound) -> Void = { _ in }
    ) {
        self.pool = pool
        self.configuration = configuration
        self.logger = logger
        self.onRound = onRound
    }

    /// Runs rounds until cancelled or gracefully shut down.
    public func run() async throws {
        try await cancelWhenGracefulShutdown { await self.loop() }
    }

    /// Runs rounds and admission until cancelled; a failed round is logged and tried again at
    /// the next.
    func loop() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.sweepLoop() }
            group.addTask { await self.admissionLoop() }
        }
    }

    private func sweepLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.interval)
            if Task.isCancelled { return }
            do {
                try await runOnce()
            } catch {
                logger.warning("maintenance failed; trying again at the next round", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Admission rounds: every `admitInterval` while this process leads them, every second
    /// while another does (so a successor takes over within a second of a leader's end).
    private func admissionLoop() async {
        var leading = false
        var failures = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: leading ? configuration.admitInterval : .seconds(1))
            if Task.isCancelled { return }
            do {
                leading = try await admit() != nil
                failures = 0
            } catch {
                // A leader that lost the database keeps trying at its own pace, so admission
                // resumes as soon as the server is back (followers still wait a second).
                failures += 1
                if failures == 1 || failures % 60 == 0 {
                    logger.warning("admission failed; trying again", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// One admission round, if no other process is leading admission: returns what it did, or
    /// `nil` when another process holds the admitter's lock.
    @discardableResult
    public func admit(limit: Int = 1000) async throws -> AdmissionRound? {
        try await pool.withTransaction { conn in
            guard try await conn.query(MaintenanceSQL.tryAdmitLock())[0].decode("ok", as: Bool.self) else { return nil }
            let row = try await conn.query(MaintenanceSQL.admit(limit: limit))[0]
            return AdmissionRound(admitted: try row.decode("admitted"), batchesFinished: try row.decode("batches_finished"))
        }
    }

    /// One round now: the sweep if no other process is running it, then the prune, and an
    /// admission round.
    @discardableResult
    public func runOnce() async throws -> MaintenanceRound {
        guard let rescued = try await sweep() else { return MaintenanceRound(led: false, admission: try await admit()) }
        var round = MaintenanceRound(led: true, rescued: rescued, admission: try await admit())
        if let retention = configuration.retention {
            // In transactions of their own: the sweep's lock is not held meanwhile, and each
            // page commits on its own.
            do {
                round.pruned = try await prune(olderThan: retention, batch: configuration.pruneBatch, budget: configuration.pruneBudget)
            } catch {
                logger.warning("pruning finished jobs failed; trying again at the next round", metadata: ["error": "\(error)"])
            }
        }
        onRound(round)
        return round
    }

    /// The sweep, if no other process is running it: rescues stale and overdue jobs (page by
    /// page) and folds the position counts, in one transaction that holds the sweep lock.
    /// Returns how many jobs it rescued, or `nil` when another process holds the lock.
    public func sweep() async throws -> Int? {
        let result: Int? = try await pool.withTransaction { conn in
            guard try await conn.query(MaintenanceSQL.trySweepLock())[0].decode("ok", as: Bool.self) else {
                return nil
            }
            var rescued = 0
            while true {
                let rows = try await conn.query(
                    MaintenanceSQL.rescue(lease: configuration.lease, grace: configuration.stuckGrace, backoff: configuration.backoff, limit: configuration.rescueBatch))
                rescued += rows.count
                for row in rows {
                    let overdue = (try? row.decode("overdue", as: Bool.self)) ?? false
                    logger.info(overdue ? "sweep ended an overdue job" : "sweep rescued a job from a lost worker",
                                metadata: ["job.id": "\((try? row.decode("id", as: UUID.self))?.lowercasedString ?? "?")",
                                           "job.status": "\((try? row.decode("status", as: String.self)) ?? "?")"])
                }
                if rows.count < configuration.rescueBatch { break }
            }
            try await conn.query(MaintenanceSQL.foldCounts())
            try await conn.query(MaintenanceSQL.trimCounts())
            return rescued
        }
        return result
    }

    /// Deletes finished jobs (and their results), emptied batches and gone workers older than
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
                try await conn.query(MaintenanceSQL.pruneLockTimeout())
                let row = try await conn.query(MaintenanceSQL.prune(olderThan: olderThan, limit: batch, dryRun: dryRun))[0]
                return PruneResult(
                    jobs: try row.decode("jobs"), results: try row.decode("results"),
                    batches: try row.decode("batches"), workers: try row.decode("workers"), transactions: 1)
            }
            total.add(page)
            if dryRun || max(page.jobs, page.batches, page.workers) < batch { break }
            if let budget, ContinuousClock.now - started >= budget { break }
        }
        if total.jobs + total.batches + total.workers > 0 && !dryRun {
            logger.info("pruned finished jobs", metadata: [
                "prune.jobs": "\(total.jobs)", "prune.results": "\(total.results)",
                "prune.batches": "\(total.batches)", "prune.workers": "\(total.workers)",
            ])
        }
        return total
    }
}

/// What a prune deleted (or, in a dry run, would delete).
public struct PruneResult: Sendable, Equatable, Codable {
    public var jobs = 0
    /// Stored results deleted with their jobs.
    public var results = 0
    public var batches = 0
    public var workers = 0
    /// Transactions it took (one page each).
    public var transactions = 0

    public init(jobs: Int = 0, results: Int = 0, batches: Int = 0, workers: Int = 0, transactions: Int = 0) {
        self.jobs = jobs
        self.results = results
        self.batches = batches
        self.workers = workers
        self.transactions = transactions
    }

    mutating func add(_ other: PruneResult) {
        jobs += other.jobs
        results += other.results
        batches += other.batches
        workers += other.workers
        transactions += other.transactions
    }
}
