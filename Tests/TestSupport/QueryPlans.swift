import Foundation
import JobEngine
import Postgres

/// Query plans, for tests that check a statement is answered from an index: the planner is
/// given a table shaped like a busy queue's (mostly pending, some finished, a few failed,
/// analyzed), where a statement without a usable index is planned as a sequential scan.
public enum QueryPlans {
    /// Fills the schema's `jobs` with `pending` pending jobs over many groups, finishes a tenth
    /// of them (a hundredth of those in error) and analyzes the table.
    public static func seedBusyQueue(_ pool: PGPool, pending: Int = 20_000) async throws {
        try await pool.query("""
            INSERT INTO jobs (id, group_id, kind, params, priority, tag)
            SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((g % 500)::text, 12, '0'))::uuid, 'test.script', '{}',
                   (ARRAY['high', 'normal', 'low'])[1 + g % 3]::job_priority, now() + g * interval '1 millisecond'
            FROM generate_series(1, \(pending)) g
            """)
        let ids = try await pool.query("SELECT id FROM jobs LIMIT \(pending / 10)").map { try $0.decode("id", as: UUID.self) }
        let failed = ids.count / 100
        try await JobFactory(pool).finish(Array(ids.dropFirst(failed)), as: .completed)
        try await JobFactory(pool).finish(Array(ids.prefix(failed)), as: .error)
        try await pool.query("ANALYZE jobs")
    }

    /// A large queue written in two statements: `pending` claimable image jobs over 1,000
    /// conversations (the insert trigger counts them as a submit would) and `finished` jobs that
    /// finished in the last hour, every 50th in error after a failed attempt, with the
    /// completion counts the count trigger keeps.
    public static func seedLargeQueue(_ pool: PGPool, pending: Int, finished: Int) async throws {
        // In statements of 100,000 rows, each well inside the test connections' statement timeout.
        for start in stride(from: 1, through: pending, by: 100_000) {
            try await pool.query("""
                INSERT INTO jobs (id, group_id, kind, params, priority, tag)
                SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((g % 1000)::text, 12, '0'))::uuid, 'image.generate',
                       '{"prompt":"a lighthouse"}', (ARRAY['high', 'normal', 'low'])[1 + g % 3]::job_priority, now() + g * interval '1 millisecond'
                FROM generate_series(\(start)::int, \(min(pending, start + 99_999))::int) g
                """)
        }
        try await pool.query("""
            INSERT INTO jobs (id, group_id, kind, params, priority, status, attempt, retry_count, created_at, next_attempt_at,
                              started_at, finished_at, error_message, errors)
            SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((g % 1000)::text, 12, '0'))::uuid, 'image.generate',
                   '{"prompt":"a lighthouse"}', (ARRAY['high', 'normal', 'low'])[1 + g % 3]::job_priority,
                   CASE WHEN g % 50 = 0 THEN 'error' ELSE 'completed' END::job_status, 1, 0,
                   now() - (g % 3000) * interval '1 second' - interval '5 seconds', now() - (g % 3000) * interval '1 second' - interval '5 seconds',
                   now() - (g % 3000) * interval '1 second' - interval '2 seconds', now() - (g % 3000) * interval '1 second',
                   CASE WHEN g % 50 = 0 THEN 'backend said no' END,
                   CASE WHEN g % 50 = 0 THEN jsonb_build_array(jsonb_build_object(
                       'attempt', 1, 'at', now() - (g % 3000) * interval '1 second', 'message', 'backend said no', 'retried', false))
                        ELSE '[]' END
            FROM generate_series(1, \(finished)::int) g
            """)
        try await pool.query("""
            INSERT INTO job_count_deltas (metric, priority, second, n)
            SELECT 1, priority, date_trunc('second', finished_at), count(*) FROM jobs WHERE status = 'completed' GROUP BY 2, 3
            """)
        try await pool.query("VACUUM ANALYZE jobs")
    }

    /// The plan of `query`, its parameters written into the text as literals (EXPLAIN takes
    /// none here).
    public static func plan(_ query: PGQuery, pool: PGPool) async throws -> [String] {
        var sql = query.sql
        for (n, bind) in query.binds.enumerated().reversed() {
            let literal: String
            switch bind {
            case .null: literal = "NULL"
            case .text(let text): literal = "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
            case .binary: literal = "NULL::bytea"
            }
            sql = sql.replacingOccurrences(of: "$\(n + 1)", with: literal)
        }
        return try await pool.query(PGQuery(unsafeSQL: "EXPLAIN " + sql)).map { try $0.decode("QUERY PLAN", as: String.self) }
    }

    /// Whether a plan reads the whole of `table`.
    public static func scans(_ plan: [String], table: String) -> Bool {
        plan.contains { $0.contains("Seq Scan on \(table) ") }
    }
}
