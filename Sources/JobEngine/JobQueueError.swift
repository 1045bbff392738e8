import Foundation
import Postgres

/// An error of the job queue, with a code callers can switch on.
public struct JobQueueError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }
        /// The input is invalid; ``JobQueueError/field`` and ``JobQueueError/index`` say where.
        public static let invalidInput = Code("invalid_input")
        /// No job (or batch) with that id.
        public static let notFound = Code("not_found")
        /// The job is not in a state that allows the operation (e.g. retry of a completed job).
        public static let invalidState = Code("invalid_state")
        /// The database could not be reached or broke off.
        public static let databaseUnavailable = Code("database_unavailable")
        /// The database refused the statement.
        public static let database = Code("database")
        /// An idempotency key is already used by a different job of the group.
        public static let duplicate = Code("duplicate")
        /// The database role may not do this (pausing, say, is the schema owner's).
        public static let notPermitted = Code("not_permitted")
        public var description: String { raw }
    }

    public var code: Code
    public var message: String
    /// The offending field (`timeout`, `params`, …) for invalid input.
    public var field: String?
    /// The offending item's index in a batch.
    public var index: Int?
    public var jobID: UUID?

    public init(_ code: Code, _ message: String, field: String? = nil, index: Int? = nil, jobID: UUID? = nil) {
        self.code = code
        self.message = message
        self.field = field
        self.index = index
        self.jobID = jobID
    }

    public var description: String {
        var prefix = ""
        if let index { prefix += "item \(index): " }
        if let field, !message.hasPrefix(field) { prefix += "\(field): " }
        return prefix + message
    }

    /// Maps a database error to the queue's vocabulary (the one mapping at this boundary);
    /// other errors come back as they were.
    public static func from(_ error: any Error, jobID: UUID? = nil) -> any Error {
        if let error = error as? JobQueueError { return error }
        if let tx = error as? PGTransactionError { return from(tx.underlying, jobID: jobID) }
        guard let pg = error as? PGError else { return error }
        switch pg.kind {
        case .connectionFailed, .connectionClosed, .poolTimeout, .poolClosed:
            return JobQueueError(.databaseUnavailable, "the database is unavailable: \(pg)", jobID: jobID)
        default:
            if pg.sqlState == .uniqueViolation, pg.constraint == "jobs_idempotency_key" || pg.constraint == "batches_idempotency_key" {
                return JobQueueError(.duplicate, "the idempotency key is already used in this group", field: "idempotency_key", jobID: jobID)
            }
            if pg.sqlState == .invalidParameterValue, let field = pg.column, !field.isEmpty {
                // submit_job's verdict on bad input: "item N: " for a batch item, then a message
                // that names the field, never a value.
                var message = Substring(pg.message)
                var index: Int?
                if message.hasPrefix("item "), let colon = message.firstIndex(of: ":"), let n = Int(message.dropFirst(5)[..<colon]) {
                    index = n
                    message = message[message.index(colon, offsetBy: 2)...]
                }
                return JobQueueError(.invalidInput, String(message), field: field, index: index, jobID: jobID)
            }
            if pg.sqlState == .insufficientPrivilege {
                return JobQueueError(.notPermitted, "the database role may not do this: \(pg.message)", jobID: jobID)
            }
            if pg.sqlState?.errorClass == "08" || pg.sqlState == .adminShutdown || pg.sqlState == .cannotConnectNow {
                return JobQueueError(.databaseUnavailable, "the database is unavailable: \(pg)", jobID: jobID)
            }
            return JobQueueError(.database, "the database refused the request: \(pg)", jobID: jobID)
        }
    }
}
