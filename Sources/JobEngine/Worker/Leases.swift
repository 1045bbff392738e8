import Foundation
import Logging
import Postgres

/// Keeping running attempts: heartbeats (and giving jobs up when they fail too long), deadlines,
/// and the metrics that watch them.
extension Worker {
    func heartbeatLoop() async {
        var lastAck = ContinuousClock.now
        let fence = configuration.lease - configuration.heartbeatInterval * 2
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.heartbeatInterval)
            if Task.isCancelled { return }
            let running = state.runningAttempts()
            let sent = ContinuousClock.now
            do {
                let rows = try await pool.query(
                    JobSQL.heartbeat(workerID: configuration.id, ids: running.map(\.0), attempts: running.map(\.1)))
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

    /// Writes the progress handlers reported, every second, in one statement for all running
    /// attempts (so a job costs at most one write a second however often its handler reports).
    func progressLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let reported = state.takeProgress()
            guard !reported.isEmpty else { continue }
            do {
                let written = try await pool.query(JobSQL.progress(
                    workerID: configuration.id, ids: reported.map(\.id), attempts: reported.map(\.attempt),
                    steps: reported.map(\.step), totals: reported.map(\.total)))
                state.update { $0.progressWrites += written.affectedRows }
            } catch {
                // Progress is advisory: the next report after the database is back is written.
                logger.debug("progress write failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Ends attempts whose deadline passed (checked every 50 ms), cancelling their handlers.
    func deadlineLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            state.expire(now: .now)
        }
    }

    /// Forwards reconnects (pool and listener) to the metrics every few seconds, and samples
    /// the queue depth when ``WorkerConfiguration/queueDepthSampleInterval`` is set.
    func metricsLoop(_ listener: PGListener?) async {
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
                if let rows = try? await pool.query(JobSQL.queueDepth()) {
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
}
