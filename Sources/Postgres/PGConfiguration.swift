import CLibPQ
import Foundation

/// How to reach PostgreSQL and the session settings every connection gets.
///
/// The connection string is a libpq URL (`postgresql://user@host:5432/db?sslmode=verify-full`)
/// or a keyword string (`host=… dbname=…`); empty means libpq's standard `PG*` environment
/// variables. It may hold a password, so it is never printed: ``description`` shows only an
/// allow-list of fields (host, port, database, user, sslmode).
public struct PGConfiguration: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The libpq connection string; may contain a password.
    public var connectionString: String
    /// `application_name`, shown in `pg_stat_activity`. Defaults to `imagejobs`.
    public var applicationName: String = "imagejobs"
    /// libpq `connect_timeout` in seconds. Defaults to `5`.
    public var connectTimeoutSeconds: Int = 5
    /// `statement_timeout` for every statement on the connection. Defaults to `30` seconds.
    public var statementTimeout: Duration = .seconds(30)
    /// `lock_timeout`, kept below the statement timeout. Defaults to `5` seconds.
    public var lockTimeout: Duration = .seconds(5)
    /// `idle_in_transaction_session_timeout`. Defaults to `60` seconds.
    public var idleInTransactionTimeout: Duration = .seconds(60)
    /// TCP keepalive idle time in seconds before the first probe. Defaults to `30`.
    public var keepalivesIdleSeconds: Int = 30
    /// Seconds between keepalive probes. Defaults to `10`.
    public var keepalivesIntervalSeconds: Int = 10
    /// Unanswered probes before the connection is dropped. Defaults to `3`.
    public var keepalivesCount: Int = 3
    /// libpq `tcp_user_timeout` in milliseconds (unacknowledged data). Defaults to `30000`.
    public var tcpUserTimeoutMilliseconds: Int = 30_000
    /// The schema put first on `search_path`, or `nil` for the server's default.
    public var searchPath: String?

    public init(connectionString: String) {
        self.connectionString = connectionString
    }

    /// Resolves the connection string: an explicit value (a `--database-url` flag) first, then
    /// `DATABASE_URL`, then the empty string that makes libpq read `PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGPASSWORD` and `PGDATABASE`.
    public static func resolve(
        explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> PGConfiguration {
        if let explicit, !explicit.isEmpty { return PGConfiguration(connectionString: explicit) }
        if let url = environment["DATABASE_URL"], !url.isEmpty { return PGConfiguration(connectionString: url) }
        return PGConfiguration(connectionString: "")
    }

    /// Checks the connection string parses, without connecting.
    /// - Throws: ``PGError`` of kind `.invalidConfiguration` with libpq's reason, redacted.
    public func validate() throws {
        _ = try parsedFields()
    }

    /// The fields of the connection string that are safe to show.
    public var safeFields: [(String, String)] {
        guard let fields = try? parsedFields() else { return [] }
        let allowed = ["host", "hostaddr", "port", "dbname", "user", "sslmode", "target_session_attrs"]
        return allowed.compactMap { key in fields[key].map { (key, $0) } }
    }

    public var description: String {
        guard (try? parsedFields()) != nil else { return "PGConfiguration(invalid connection string)" }
        let shown = safeFields.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
        return "PGConfiguration(\(shown.isEmpty ? "from PG* environment" : shown))"
    }

    public var debugDescription: String { description }

    /// `dump()` and `Mirror` see only the safe description, never the connection string.
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }

    /// Parses the connection string with libpq (no I/O) into its explicitly given fields.
    func parsedFields() throws -> [String: String] {
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(connectionString, &errorMessage) else {
            var reason = "libpq could not parse it"
            if let errorMessage {
                reason = Redaction.redactQuoted(String(cString: errorMessage).trimmingCharacters(in: .whitespacesAndNewlines), keeping: [])
                PQfreemem(errorMessage)
            }
            throw PGError(
                .invalidConfiguration,
                message: "the database URL is invalid: \(reason); expected postgresql://user@host:port/dbname or host=… dbname=…")
        }
        defer { PQconninfoFree(options) }
        var fields: [String: String] = [:]
        var p = options
        while let keyword = p.pointee.keyword {
            if let value = p.pointee.val { fields[String(cString: keyword)] = String(cString: value) }
            p += 1
        }
        return fields
    }

    /// The keyword/value pairs handed to `PQconnectdbParams`: defaults before the expanded
    /// connection string (so it can override them), the session options after it.
    func connectParameters() throws -> [(String, String)] {
        let fields = try parsedFields()
        func ms(_ d: Duration) -> Int {
            Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
        }
        var options = fields["options"].map { $0 + " " } ?? ""
        options += "-c statement_timeout=\(ms(statementTimeout))"
        options += " -c lock_timeout=\(ms(lockTimeout))"
        options += " -c idle_in_transaction_session_timeout=\(ms(idleInTransactionTimeout))"
        options += " -c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c client_encoding=UTF8"
        if let searchPath {
            options += " -c search_path=" + Self.escapeOption(PGQuery.quoteIdentifier(searchPath)) + ",public"
        }
        return [
            ("application_name", applicationName),
            ("connect_timeout", String(connectTimeoutSeconds)),
            ("keepalives", "1"),
            ("keepalives_idle", String(keepalivesIdleSeconds)),
            ("keepalives_interval", String(keepalivesIntervalSeconds)),
            ("keepalives_count", String(keepalivesCount)),
            ("tcp_user_timeout", String(tcpUserTimeoutMilliseconds)),
            ("dbname", connectionString),
            ("options", options),
        ]
    }

    /// Escapes a value for libpq's `options` (spaces and backslashes take a backslash).
    static func escapeOption(_ value: String) -> String {
        var out = ""
        for ch in value {
            if ch == " " || ch == "\\" { out.append("\\") }
            out.append(ch)
        }
        return out
    }
}
