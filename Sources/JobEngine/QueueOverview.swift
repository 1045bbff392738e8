import Foundation
import Postgres

/// The queue at a glance, as a dashboard shows it: what waits, runs and finished, per priority,
/// and the jobs at the edges (running, next in claim order, just finished). Every figure comes
/// from an index or the folded counts, so reading it costs the same at 1M jobs as at 10.
public struct QueueOverview: Sendable, Equatable, Codable {
    public struct PriorityCounts: Sendable, Equatable, Codable {
        public var priority: JobPriority
        /// Pending jobs with a place in the claim order (including retries waiting out a backoff).
        public var queued: Int
        /// Pending jobs held at a gate: a run-at time, a cap, a rate limit or a pause.
        public var held: Int
        public var running: Int
        /// When the job next in claim order was submitted.
        public var nextSubmittedAt: Date?
    }

    public struct MinuteCount: Sendable, Equatable, Codable {
        public var minute: Date
        public var completed: Int
    }

    /// The database's time of the read.
    public var readAt: Date
    public var priorities: [PriorityCounts]
    /// Held jobs are counted up to a cap; `true` when there are more than the counts say.
    public var heldCapped: Bool
    /// Completions per minute over the last hour, oldest first (minutes with none left out).
    public var completedPerMinute: [MinuteCount]
    public var running: [Job]
    public var nextUp: [Job]
    public var recentlyFinished: [Job]
    /// Paused kinds (`*`: every kind).
    public var paused: [String]
}

extension JobQueue {
    /// Reads the overview in one read-only snapshot. Held jobs are counted up to `heldCap`;
    /// each job list holds at most `listLimit` jobs.
    public func overview(heldCap: Int = 10_000, listLimit: Int = 10) async throws -> QueueOverview {
        do {
            return try await pool.withTransaction { connection in
                try await connection.query(OverviewSQL.snapshot())
                try await connection.query(OverviewSQL.timeout())
                let counts = try await connection.query(OverviewSQL.counts(gatedCap: heldCap))
                let priorities = try counts.map { row in
                    QueueOverview.PriorityCounts(
                        priority: try row.decode("priority"), queued: try row.decode("claimable"), held: try row.decode("gated"),
                        running: try row.decode("running"), nextSubmittedAt: try row.decode("head_created_at"))
                }
                let minutes = try await connection.query(OverviewSQL.completedPerMinute()).map { row in
                    QueueOverview.MinuteCount(minute: try row.decode("minute"), completed: try row.decode("n"))
                }
                return QueueOverview(
                    readAt: try counts[0].decode("read_at"), priorities: priorities,
                    heldCapped: priorities.reduce(0) { $0 + $1.held } > heldCap, completedPerMinute: minutes,
                    running: try await connection.query(OverviewSQL.running(limit: listLimit)).map(JobSQL.decodeJob),
                    nextUp: try await connection.query(OverviewSQL.nextUp(limit: listLimit)).map(JobSQL.decodeJob),
                    recentlyFinished: try await connection.query(OverviewSQL.recentlyFinished(limit: listLimit)).map(JobSQL.decodeJob),
                    paused: try await connection.query(OverviewSQL.paused()).map { try $0.decode("kind") })
            }
        } catch {
            throw JobQueueError.from(error)
        }
    }
}
