import Foundation
import Postgres

/// The reporting views' reads (migration 0006).
enum ReportSQL: StatementCatalog {
    /// One snapshot for every section of a report.
    static func snapshot() -> PGQuery {
        statement("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    }

    /// The window the windowed views cover, for this transaction.
    static func window(_ window: Duration) -> PGQuery {
        statement("SELECT set_config('imagejobs.report_window', \("\(window.milliseconds) milliseconds"), true)")
    }

    static func view(_ name: String) -> PGQuery {
        statement("SELECT * FROM \(identifier: name)")
    }
}

/// Reads of the reporting views (`report_*`, migration 0006), for people and dashboards.
public enum Reports {
    /// Reads `views` in one read-only, repeatable-read transaction (one snapshot), the windowed
    /// ones over the last `window`, each statement within `statementTimeout` when one is given
    /// (a page that must answer fast), else the connection's.
    public static func read(views: [String], window: Duration, statementTimeout: Duration? = nil, pool: PGPool) async throws -> [PGRows] {
        try await pool.withTransaction { conn in
            try await conn.query(ReportSQL.snapshot())
            if let statementTimeout { try await conn.setLocalStatementTimeout(statementTimeout) }
            try await conn.query(ReportSQL.window(window))
            var out: [PGRows] = []
            for view in views { out.append(try await conn.query(ReportSQL.view(view))) }
            return out
        }
    }
}
