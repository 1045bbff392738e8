/// A SQLSTATE code, as defined in the PostgreSQL manual's appendix A.
public struct SQLState: Hashable, Sendable, ExpressibleByStringLiteral, CustomStringConvertible {
    /// The five-character code, e.g. `23505`.
    public let code: String

    public init(_ code: String) { self.code = code }
    public init(stringLiteral value: String) { self.code = value }

    /// The two-character class, e.g. `23` for integrity constraint violations.
    public var errorClass: String { String(code.prefix(2)) }

    public var description: String { code }

    // Class 08 — Connection Exception
    public static let connectionException: SQLState = "08000"
    public static let connectionFailure: SQLState = "08006"
    public static let sqlClientUnableToEstablishConnection: SQLState = "08001"
    // Class 22 — Data Exception
    public static let invalidParameterValue: SQLState = "22023"
    public static let invalidTextRepresentation: SQLState = "22P02"
    public static let characterNotInRepertoire: SQLState = "22021"
    public static let untranslatableCharacter: SQLState = "22P05"
    // Class 23 — Integrity Constraint Violation
    public static let notNullViolation: SQLState = "23502"
    public static let foreignKeyViolation: SQLState = "23503"
    public static let uniqueViolation: SQLState = "23505"
    public static let checkViolation: SQLState = "23514"
    // Class 25 — Invalid Transaction State
    public static let readOnlySQLTransaction: SQLState = "25006"
    public static let idleInTransactionSessionTimeout: SQLState = "25P03"
    // Class 40 — Transaction Rollback
    public static let serializationFailure: SQLState = "40001"
    public static let deadlockDetected: SQLState = "40P01"
    // Class 42 — Syntax Error or Access Rule Violation
    public static let insufficientPrivilege: SQLState = "42501"
    public static let syntaxError: SQLState = "42601"
    public static let undefinedTable: SQLState = "42P01"
    public static let duplicateSchema: SQLState = "42P06"
    public static let duplicateTable: SQLState = "42P07"
    public static let duplicateObject: SQLState = "42710"
    // Class 53 — Insufficient Resources
    public static let tooManyConnections: SQLState = "53300"
    // Class 55 — Object Not In Prerequisite State
    public static let lockNotAvailable: SQLState = "55P03"
    // Class 57 — Operator Intervention
    public static let queryCanceled: SQLState = "57014"
    public static let adminShutdown: SQLState = "57P01"
    public static let crashShutdown: SQLState = "57P02"
    public static let cannotConnectNow: SQLState = "57P03"

    /// Whether the failure is transient: retrying the same work later may succeed
    /// (serialization failures, deadlocks, lock timeouts, cancelled statements, server shutdown,
    /// read-only failover and every connection exception).
    public var isTransient: Bool {
        switch self {
        case .serializationFailure, .deadlockDetected, .lockNotAvailable, .queryCanceled,
            .adminShutdown, .crashShutdown, .cannotConnectNow, .readOnlySQLTransaction,
            .tooManyConnections, .idleInTransactionSessionTimeout:
            return true
        default:
            return errorClass == "08"
        }
    }

    /// Whether the connection that saw this error should be dropped rather than reused.
    public var invalidatesConnection: Bool {
        switch self {
        case .adminShutdown, .crashShutdown, .cannotConnectNow, .readOnlySQLTransaction,
            .idleInTransactionSessionTimeout:
            return true
        default:
            return errorClass == "08"
        }
    }
}

/// An error from the PostgreSQL layer.
///
/// `description` is short and redacted: it names the SQLSTATE, the statement and the server's
/// message with any quoted value that is not an identifier replaced by `"…"`. It never contains
/// a bound value or a password. The raw fields stay readable as properties for callers that
/// decide to show them.
public struct PGError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What kind of failure this is; extensible, so new kinds don't break `switch`es.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case server, connectionFailed, connectionClosed, invalidConfiguration, decoding,
                poolTimeout, poolClosed, cancelled, protocolViolation
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The server answered with an error (SQLSTATE in ``PGError/sqlState``).
        public static let server = Kind(.server)
        /// A connection could not be opened.
        public static let connectionFailed = Kind(.connectionFailed)
        /// An open connection broke (server restart, terminated backend, network).
        public static let connectionClosed = Kind(.connectionClosed)
        /// The connection string or a setting is invalid.
        public static let invalidConfiguration = Kind(.invalidConfiguration)
        /// A value could not be decoded into the requested Swift type.
        public static let decoding = Kind(.decoding)
        /// No connection became free within the pool's acquire timeout.
        public static let poolTimeout = Kind(.poolTimeout)
        /// The pool was shut down.
        public static let poolClosed = Kind(.poolClosed)
        /// The awaiting task was cancelled and the statement with it.
        public static let cancelled = Kind(.cancelled)
        /// libpq returned something the wrapper did not expect.
        public static let protocolViolation = Kind(.protocolViolation)

        public var description: String { base.rawValue }
    }

    public var kind: Kind
    /// The SQLSTATE the server sent, when it sent one.
    public var sqlState: SQLState?
    /// The server's primary message (may quote values; use ``description`` to show it).
    public var message: String
    /// The server's detail field (may quote values; never part of ``description``).
    public var detail: String?
    public var hint: String?
    public var constraint: String?
    public var table: String?
    public var column: String?
    public var dataType: String?
    /// The name of the statement that failed (a `JobSQL` function name, for example).
    public var queryName: String?

    public init(
        _ kind: Kind, message: String, sqlState: SQLState? = nil, detail: String? = nil,
        hint: String? = nil, constraint: String? = nil, table: String? = nil, column: String? = nil,
        dataType: String? = nil, queryName: String? = nil
    ) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
        self.constraint = constraint
        self.table = table
        self.column = column
        self.dataType = dataType
        self.queryName = queryName
    }

    /// Whether retrying the same work later may succeed.
    public var isTransient: Bool {
        switch kind {
        case .connectionFailed, .connectionClosed, .poolTimeout: return true
        case .server: return sqlState?.isTransient ?? false
        default: return false
        }
    }

    /// Whether the connection that raised it must not be reused.
    public var invalidatesConnection: Bool {
        switch kind {
        case .connectionClosed, .connectionFailed, .protocolViolation: return true
        case .server: return sqlState?.invalidatesConnection ?? false
        default: return false
        }
    }

    public var description: String {
        var text = "PostgreSQL \(kind)"
        if let sqlState { text += " \(sqlState)" }
        if let queryName { text += " in \(queryName)" }
        let known = [constraint, table, column, dataType].compactMap { $0 }
        text += ": " + Redaction.redactQuoted(message, keeping: known)
        if let hint, kind != .server { text += " (\(Redaction.redactQuoted(hint, keeping: known)))" }
        return text
    }

    public var debugDescription: String {
        var parts = [description]
        if let constraint { parts.append("constraint=\(constraint)") }
        if let table { parts.append("table=\(table)") }
        if let column { parts.append("column=\(column)") }
        if let hint { parts.append("hint=\(Redaction.redactQuoted(hint, keeping: []))") }
        return parts.joined(separator: " ")
    }
}

/// A transaction that failed, naming the phase that failed.
public struct PGTransactionError: Error, Sendable, CustomStringConvertible {
    public enum Phase: String, Sendable {
        case begin, body, commit, rollback
    }
    /// The phase that failed first.
    public var phase: Phase
    /// The error of that phase.
    public var underlying: any Error
    /// The rollback's own error, when the body failed and the rollback failed too.
    public var rollbackError: PGError?

    public var description: String {
        var text = "transaction failed at \(phase): \(underlying)"
        if let rollbackError { text += "; rollback also failed: \(rollbackError)" }
        return text
    }
}

enum Redaction {
    /// Replaces every double-quoted segment of `text` that is not one of `keeping` and does not
    /// look like a SQL identifier with `"…"`. Server messages quote the offending value (for
    /// example `invalid input syntax for type uuid: "…"`); identifiers such as constraint names
    /// are what a reader needs and are kept.
    static func redactQuoted(_ text: String, keeping: [String]) -> String {
        var out = ""
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "\"") {
            out += rest[..<open]
            let afterOpen = rest.index(after: open)
            guard let close = rest[afterOpen...].firstIndex(of: "\"") else {
                out += "\"…"
                return out
            }
            let inner = String(rest[afterOpen..<close])
            if keeping.contains(inner) || looksLikeIdentifier(inner) {
                out += "\"\(inner)\""
            } else {
                out += "\"…\""
            }
            rest = rest[rest.index(after: close)...]
        }
        out += rest
        return out
    }

    static func looksLikeIdentifier(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 63 else { return false }
        guard let first = s.unicodeScalars.first, first == "_" || (first.properties.isAlphabetic && first.isASCII)
        else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "." || $0 == "$") }
            && !s.contains("..")
            && s.lowercased() == s  // identifiers the engine creates are lower-case; mixed case is data
    }
}
