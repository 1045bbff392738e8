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
    /// Finished jobs (with their results), emptied batches and gone workers older than this are
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

    /// Whether this process takes part in the fleet-wide maintenance (one process leads each
    /// round; see ``Maintenance``). Defaults to `true`; turn it off where `imagejobs maintain`
    /// (or another worker) does it.
    public var runsMaintenance = true

    /// The maintenance these settings describe: the sweep's interval, grace, batch and
    /// retention, with this worker's lease and backoff (one of each for the fleet).
    public var maintenance: MaintenanceConfiguration {
        MaintenanceConfiguration(
            interval: sweepInterval, lease: lease, stuckGrace: stuckGrace, backoff: backoff, rescueBatch: sweepBatch,
            retention: retention, pruneBatch: pruneBatch, pruneBudget: pruneBudget)
    }

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
    /// Progress values written (at most one a job a second, whatever its handler reported).
    public var progressWrites = 0
}

extension WorkerConfiguration {
    /// Waits before reconnect attempt `attempt`: capped, fully jittered exponential backoff,
    /// 100 ms · 2ⁿ up to ``maxReconnectDelay``.
    func reconnectDelay(_ attempt: Int) async {
        let capMs = Double(maxReconnectDelay.milliseconds)
        let ms = Double.random(in: 0...min(capMs, 100 * pow(2, Double(min(attempt, 20)))))
        try? await Task.sleep(for: .milliseconds(Int64(max(ms, 20))))
    }
}
