import Foundation
import Logging
import Postgres

/// One schema migration: an `NNNN_name.up.sql` file and its `.down.sql`.
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var up: String
    public var down: String

    public init(version: Int, name: String, up: String, down: String) {
        self.version = version
        self.name = name
        self.up = up
        self.down = down
    }

    /// `0001_create_jobs`.
    public var fileStem: String { String(format: "%04d_%@", version, name) }

    /// SHA-256 of the up file, recorded when applied; a changed file is refused.
    public var checksum: String { SHA256.hexDigest(Array(up.utf8)) }

    /// Checksums of earlier texts of migrations corrected after they shipped, where the
    /// correction changes how the migration reaches its schema and not the schema itself, so a
    /// database that applied the earlier text is up to date. Version 9's first text dropped
    /// and recreated every view of the schema, and failed where an extension owns one
    /// (`pg_stat_statements` installed in `public`); the corrected text touches only the views
    /// that read `jobs`, which the first text recreated the same way.
    static let supersededChecksums: [Int: Set<String>] = [
        9: ["a7ce562197603204eb763919ae182ed6b0f819d3cbdfa5db9970daf6e2ed9091"],
    ]

    /// Whether a checksum recorded for this version is this file's, or a superseded text's.
    public func matches(recordedChecksum: String) -> Bool {
        recordedChecksum == checksum || Self.supersededChecksums[version]?.contains(recordedChecksum) == true
    }

    /// Whether the file opts out of a transaction (first line `-- migrate:no-transaction`), for
    /// statements such as `CREATE INDEX CONCURRENTLY`.
    public static func runsInTransaction(_ sql: String) -> Bool {
        let firstLine = sql.split(separator: "\n", maxSplits: 1).first ?? ""
        return firstLine.trimmingCharacters(in: .whitespaces) != "-- migrate:no-transaction"
    }

    /// Reads `NNNN_name.up.sql` / `.down.sql` pairs from a directory.
    public static func load(directory: URL) throws -> [Migration] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".sql") }
        var ups: [Int: (String, String)] = [:]
        var downs: [Int: String] = [:]
        for file in names {
            let parts = file.split(separator: ".")
            guard parts.count == 3, let underscore = parts[0].firstIndex(of: "_"),
                let version = Int(parts[0][..<underscore]), parts[1] == "up" || parts[1] == "down"
            else {
                throw MigrationError(
                    .invalidFile, message: "\(file): expected NNNN_name.up.sql or NNNN_name.down.sql")
            }
            let text = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            let name = String(parts[0][parts[0].index(after: underscore)...])
            if parts[1] == "up" { ups[version] = (name, text) } else { downs[version] = text }
        }
        return try ups.keys.sorted().map { version in
            let (name, up) = ups[version]!
            guard let down = downs[version] else {
                throw MigrationError(.invalidFile, message: "\(String(format: "%04d", version))_\(name).down.sql is missing")
            }
            return Migration(version: version, name: name, up: up, down: down)
        }
    }
}

/// A migration problem: a changed file, a missing file, or a failed statement.
public struct MigrationError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }
        /// An applied migration's file changed since it was applied.
        public static let checksumMismatch = Code("checksum_mismatch")
        /// The database has a version this build does not know.
        public static let unknownVersion = Code("unknown_version")
        /// A migrations file is misnamed or incomplete.
        public static let invalidFile = Code("invalid_file")
        /// A statement of a migration failed.
        public static let failed = Code("failed")
        /// `--to` names a version that does not exist.
        public static let invalidTarget = Code("invalid_target")
        public var description: String { raw }
    }
    public var code: Code
    public var message: String
    public init(_ code: Code, message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}

/// One line of `migrate status`.
public struct MigrationStatus: Sendable, Equatable, Codable {
    public var version: Int
    public var name: String
    public var applied: Bool
    public var appliedAt: Date?
    /// Whether the applied checksum differs from the file's.
    public var changed: Bool
}

/// Applies and reverts migrations, recording them in `schema_migrations` in the current schema.
///
/// Two migrators started at once (two workers booting together) are safe: each takes a
/// session advisory lock keyed on the schema before it reads what is applied, so one applies
/// and the other waits, then finds nothing left to do.
public struct Migrator: Sendable {
    public let migrations: [Migration]
    let pool: PGPool
    let logger: Logger

    public init(pool: PGPool, migrations: [Migration] = Migration.embedded, logger: Logger) {
        self.pool = pool
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.logger = logger
    }

    /// Applies every pending migration up to `target` (all by default).
    /// - Parameter dryRun: report what would run without running it.
    /// - Returns: the migrations applied (or that would be).
    @discardableResult
    public func up(to target: Int? = nil, dryRun: Bool = false) async throws -> [Migration] {
        if let target, !migrations.contains(where: { $0.version == target }) {
            throw MigrationError(.invalidTarget, message: "no migration \(target); known versions: \(migrations.map(\.version))")
        }
        return try await locked { conn in
            let applied = try await appliedVersions(conn)
            try verify(applied)
            let pending = migrations.filter { applied[$0.version] == nil && $0.version <= (target ?? Int.max) }
            if dryRun { return pending }
            for migration in pending {
                try await run(migration.up, migration: migration, direction: "up", conn: conn) {
                    try await $0.query(MigratorSQL.record(migration))
                }
                logger.info("applied migration", metadata: ["migration.version": "\(migration.version)", "migration.name": "\(migration.name)"])
            }
            return pending
        }
    }

    /// Reverts migrations down to (and keeping) `target`; without a target, one step only.
    @discardableResult
    public func down(to target: Int? = nil, dryRun: Bool = false) async throws -> [Migration] {
        if let target, target != 0, !migrations.contains(where: { $0.version == target }) {
            throw MigrationError(.invalidTarget, message: "no migration \(target); use 0 to revert everything, or one of \(migrations.map(\.version))")
        }
        return try await locked { conn in
            let applied = try await appliedVersions(conn)
            try verify(applied)
            var revert = migrations.filter { applied[$0.version] != nil }.reversed().map { $0 }
            if let target {
                revert = revert.filter { $0.version > target }
            } else {
                revert = Array(revert.prefix(1))
            }
            if dryRun { return revert }
            for migration in revert {
                try await run(migration.down, migration: migration, direction: "down", conn: conn) {
                    try await $0.query(MigratorSQL.forget(migration))
                }
                logger.info("reverted migration", metadata: ["migration.version": "\(migration.version)", "migration.name": "\(migration.name)"])
            }
            return revert
        }
    }

    /// Every known migration with whether it is applied.
    public func status() async throws -> [MigrationStatus] {
        try await locked(wait: false) { conn in
            let applied = try await appliedVersions(conn)
            var lines = migrations.map { m in
                MigrationStatus(
                    version: m.version, name: m.name, applied: applied[m.version] != nil,
                    appliedAt: applied[m.version]?.at, changed: applied[m.version].map { !m.matches(recordedChecksum: $0.checksum) } ?? false)
            }
            for (version, record) in applied where !migrations.contains(where: { $0.version == version }) {
                lines.append(MigrationStatus(version: version, name: record.name, applied: true, appliedAt: record.at, changed: false))
            }
            return lines.sorted { $0.version < $1.version }
        }
    }

    private struct Applied { var name: String; var checksum: String; var at: Date }

    private func verify(_ applied: [Int: Applied]) throws {
        for (version, record) in applied.sorted(by: { $0.key < $1.key }) {
            guard let migration = migrations.first(where: { $0.version == version }) else {
                throw MigrationError(
                    .unknownVersion,
                    message: "the database has migration \(version) (\(record.name)) applied, which this build does not know; run a newer imagejobs")
            }
            if !migration.matches(recordedChecksum: record.checksum) {
                throw MigrationError(
                    .checksumMismatch,
                    message: "migrations/\(migration.fileStem).up.sql changed after it was applied (checksum \(record.checksum.prefix(12))… recorded, \(migration.checksum.prefix(12))… now); restore the file and add a new migration for the change")
            }
        }
    }

    private func run(
        _ sql: String, migration: Migration, direction: String, conn: PGConnection,
        record: (PGConnection) async throws -> Void
    ) async throws {
        do {
            if Migration.runsInTransaction(sql) {
                try await conn.transaction { conn in
                    try await conn.executeScript(unsafeSQL: sql, name: "\(migration.fileStem).\(direction).sql")
                    try await record(conn)
                }
            } else {
                try await conn.executeScript(unsafeSQL: sql, name: "\(migration.fileStem).\(direction).sql")
                try await record(conn)
            }
        } catch {
            let underlying = (error as? PGTransactionError)?.underlying ?? error
            throw MigrationError(.failed, message: "migrations/\(migration.fileStem).\(direction).sql failed: \(underlying)")
        }
    }

    private func appliedVersions(_ conn: PGConnection) async throws -> [Int: Applied] {
        let rows = try await conn.query(MigratorSQL.applied())
        var result: [Int: Applied] = [:]
        for row in rows {
            result[try row.decode("version")] = Applied(
                name: try row.decode("name"), checksum: try row.decode("checksum"), at: try row.decode("applied_at"))
        }
        return result
    }

    /// Runs `body` holding the schema's migration lock (a session advisory lock on one
    /// connection), creating `schema_migrations` first if needed.
    private func locked<T: Sendable>(wait: Bool = true, _ body: (PGConnection) async throws -> T) async throws -> T {
        try await pool.withConnection { conn in
            if wait {
                // Wait for another migrator without a timeout.
                for query in MigratorSQL.noTimeouts() { try await conn.query(query) }
                try await conn.query(MigratorSQL.lock())
            }
            do {
                try await conn.query(MigratorSQL.createTable())
            } catch let error as PGError where !wait && (error.sqlState == .uniqueViolation || error.sqlState == .duplicateTable) {
                // A concurrent migrator created it a moment ago.
            } catch {
                if wait { try? await unlock(conn) }
                throw error
            }
            do {
                let value = try await body(conn)
                if wait { try await unlock(conn) }
                return value
            } catch {
                if wait { try? await unlock(conn) }
                throw error
            }
        }
    }

    private func unlock(_ conn: PGConnection) async throws {
        try await conn.query(MigratorSQL.unlock())
        for query in MigratorSQL.resetTimeouts() { try await conn.query(query) }
    }
}
