import Foundation
import Postgres

/// The migrator's statements (the migrations themselves are `migrations/*.sql`).
enum MigratorSQL: StatementCatalog {
    static func createTable() -> PGQuery {
        statement("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
    }

    static func applied() -> PGQuery {
        statement("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
    }

    static func record(_ migration: Migration) -> PGQuery {
        statement("""
            INSERT INTO schema_migrations (version, name, checksum) \
            VALUES (\(migration.version), \(migration.name), \(migration.checksum))
            """)
    }

    static func forget(_ migration: Migration) -> PGQuery {
        statement("DELETE FROM schema_migrations WHERE version = \(migration.version)")
    }

    /// The schema's migration lock: a session advisory lock, so two migrators take turns.
    static func lock() -> PGQuery {
        statement("SELECT pg_advisory_lock(hashtext('imagejobs.migrate'), hashtext(current_schema()))")
    }

    static func unlock() -> PGQuery {
        statement("SELECT pg_advisory_unlock(hashtext('imagejobs.migrate'), hashtext(current_schema()))")
    }

    /// Migrations may run longer than a connection's timeouts allow; the migrator's session
    /// waits without them while it holds the lock.
    static func noTimeouts() -> [PGQuery] {
        [statement("SET statement_timeout = 0"), statement("SET lock_timeout = 0")]
    }

    static func resetTimeouts() -> [PGQuery] {
        [statement("RESET statement_timeout"), statement("RESET lock_timeout")]
    }
}
