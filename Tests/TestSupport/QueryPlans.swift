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
