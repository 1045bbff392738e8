import Foundation
import JobEngine
import Postgres

/// Puts existing jobs into a state as if they had lived through it, for tests: every column a
/// state needs set consistently (the table's rules hold), in one statement, so a test says
/// what it means ("finished eight days ago") instead of writing the UPDATE by hand.
public struct JobFactory: Sendable {
    let pool: PGPool

    public init(_ pool: PGPool) { self.pool = pool }

    /// Finished `ago`: completed, in error (with a message) or cancelled.
    public func finish(_ ids: [UUID], as status: JobStatus = .completed, ago: Duration = .zero) async throws {
        precondition(status.isFinal, "finish(as:) takes a final status")
        try await pool.query("""
            UPDATE jobs SET status = \(status.rawValue)::job_status, finished_at = now() - \(ago.milliseconds) * interval '1 millisecond',
                            error_message = CASE WHEN \(status.rawValue) = 'error' THEN 'failed (set by a test)' END
            WHERE id = ANY(\(ids)::uuid[])
            """)
    }

    /// Running as attempt 1 of `worker`, its last heartbeat `heartbeatAgo`, its deadline `deadlineIn`
    /// from now (negative: past).
    public func run(
        _ ids: [UUID], worker: String = "test-worker", heartbeatAgo: Duration = .zero, deadlineIn: Duration = .seconds(3600)
    ) async throws {
        try await pool.query("""
            UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = \(worker),
                            started_at = now() - \(heartbeatAgo.milliseconds) * interval '1 millisecond',
                            heartbeat_at = now() - \(heartbeatAgo.milliseconds) * interval '1 millisecond',
                            deadline_at = now() + \(deadlineIn.milliseconds) * interval '1 millisecond'
            WHERE id = ANY(\(ids)::uuid[])
            """)
    }

    /// Created `ago` (and due since then).
    public func age(_ ids: [UUID], by ago: Duration) async throws {
        try await pool.query("""
            UPDATE jobs SET created_at = now() - \(ago.milliseconds) * interval '1 millisecond',
                            next_attempt_at = now() - \(ago.milliseconds) * interval '1 millisecond'
            WHERE id = ANY(\(ids)::uuid[])
            """)
    }

    /// Running jobs whose deadline passed `by` ago (a handler that ignores it).
    public func overrun(_ ids: [UUID], by: Duration) async throws {
        try await pool.query("""
            UPDATE jobs SET deadline_at = now() - \(by.milliseconds) * interval '1 millisecond' WHERE id = ANY(\(ids)::uuid[])
            """)
    }

    /// Running jobs whose worker last heartbeated `ago` (a worker that died then).
    public func silence(_ ids: [UUID], for ago: Duration) async throws {
        try await pool.query("""
            UPDATE jobs SET heartbeat_at = now() - \(ago.milliseconds) * interval '1 millisecond' WHERE id = ANY(\(ids)::uuid[])
            """)
    }
}
