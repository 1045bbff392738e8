import Foundation
import Metrics

/// The worker's metrics, through swift-metrics: whatever backend the process bootstrapped
/// (Prometheus in `imagejobs worker --metrics-port`) receives them; without one they cost
/// nothing. Counters follow ``WorkerCounters`` exactly: every change of those counters is
/// forwarded here as a delta, in one place, so the two cannot disagree.
final class WorkerMetrics: Sendable {
    let claimed = Counter(label: "imagejobs_jobs_claimed_total")
    let completed = Counter(label: "imagejobs_jobs_completed_total")
    let failed = Counter(label: "imagejobs_jobs_failed_total")
    let retried = Counter(label: "imagejobs_jobs_retried_total")
    let timedOut = Counter(label: "imagejobs_jobs_timed_out_total")
    let rescued = Counter(label: "imagejobs_jobs_rescued_total")
    let staleWrites = Counter(label: "imagejobs_stale_writes_rejected_total")
    let leaseLost = Counter(label: "imagejobs_jobs_lease_lost_total")
    let released = Counter(label: "imagejobs_jobs_released_total")
    let pruned = Counter(label: "imagejobs_jobs_pruned_total")
    let claimErrors = Counter(label: "imagejobs_claim_errors_total")
    let progressWrites = Counter(label: "imagejobs_progress_writes_total")
    let reconnects = Counter(label: "imagejobs_db_reconnects_total")
    let freeSlots = Gauge(label: "imagejobs_worker_free_slots")
    let runningJobs = Gauge(label: "imagejobs_worker_running_jobs")
    private let handlerDurations: [String: Timer]
    private let queueWaits: [String: Timer]
    private let depth: [String: Gauge]

    init(kinds: [String]) {
        handlerDurations = Dictionary(uniqueKeysWithValues: kinds.map {
            ($0, Timer(label: "imagejobs_handler_duration_seconds", dimensions: [("kind", $0)]))
        })
        queueWaits = Dictionary(uniqueKeysWithValues: kinds.map {
            ($0, Timer(label: "imagejobs_queue_wait_seconds", dimensions: [("kind", $0)]))
        })
        var depth: [String: Gauge] = [:]
        for status in [JobStatus.pending, .running] {
            for priority in JobPriority.allCases {
                depth[Self.depthKey(status, priority)] = Gauge(
                    label: "imagejobs_queue_depth", dimensions: [("status", status.rawValue), ("priority", priority.rawValue)])
            }
        }
        self.depth = depth
    }

    /// Forwards what changed between two snapshots of the counters.
    func forward(from old: WorkerCounters, to new: WorkerCounters) {
        func add(_ counter: Counter, _ a: Int, _ b: Int) { if b > a { counter.increment(by: Int64(b - a)) } }
        add(claimed, old.claimed, new.claimed)
        add(completed, old.completed, new.completed)
        add(failed, old.failed, new.failed)
        add(retried, old.retried, new.retried)
        add(timedOut, old.timedOut, new.timedOut)
        add(rescued, old.rescued, new.rescued)
        add(staleWrites, old.staleWrites, new.staleWrites)
        add(leaseLost, old.leaseLost, new.leaseLost)
        add(released, old.released, new.released)
        add(pruned, old.pruned, new.pruned)
        add(claimErrors, old.claimErrors, new.claimErrors)
        add(progressWrites, old.progressWrites, new.progressWrites)
    }

    func reconnected(_ n: Int) {
        if n > 0 { reconnects.increment(by: Int64(n)) }
    }

    func handlerFinished(kind: String, after duration: Duration) {
        handlerDurations[kind]?.recordNanoseconds(duration.nanoseconds)
    }

    func claimed(kind: String, waited seconds: Double) {
        queueWaits[kind]?.recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }

    func slots(free: Int, running: Int) {
        freeSlots.record(free)
        runningJobs.record(running)
    }

    /// Sets the sampled queue depth; pairs missing from `counts` are zero.
    func queueDepth(_ counts: [(JobStatus, JobPriority, Int)]) {
        var byKey: [String: Int] = [:]
        for (status, priority, n) in counts { byKey[Self.depthKey(status, priority)] = n }
        for (key, gauge) in depth { gauge.record(byKey[key] ?? 0) }
    }

    private static func depthKey(_ status: JobStatus, _ priority: JobPriority) -> String {
        "\(status.rawValue)/\(priority.rawValue)"
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, attos) = components
        return s * 1_000_000_000 + attos / 1_000_000_000
    }
}
