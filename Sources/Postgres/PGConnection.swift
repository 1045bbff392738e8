import CLibPQ
import Foundation
import Logging

/// The handle libpq's `PQcancel` needs, usable from any thread.
///
/// A cancel request is network I/O, so it is sent from a thread of its own, never from the
/// thread that called `Task.cancel()`.
final class PGCancelHandle: @unchecked Sendable {
    private let lock = NSLock()
    private var cancel: OpaquePointer?
    private(set) var requested = false

    init(_ cancel: OpaquePointer?) { self.cancel = cancel }

    func requestCancel() {
        lock.lock()
        requested = true
        let handle = cancel
        lock.unlock()
        guard handle != nil else { return }
        let thread = Thread { [self] in
            self.lock.lock()
            defer { self.lock.unlock() }
            guard let cancel = self.cancel else { return }
            var buffer = [CChar](repeating: 0, count: 256)
            _ = PQcancel(cancel, &buffer, Int32(buffer.count))
        }
        thread.name = "pg-cancel"
        thread.start()
    }

    func resetRequested() {
        lock.lock()
        requested = false
        lock.unlock()
    }

    func free() {
        lock.lock()
        if let cancel { PQfreeCancel(cancel) }
        cancel = nil
        lock.unlock()
    }
}

/// Whether a connection can take another statement, readable from any thread: the pool asks
/// it on every lease and return, and a hop to the connection's thread for it would cost two
/// thread wake-ups each time. The connection updates it on its own thread after each statement.
final class PGConnectionHealth: @unchecked Sendable {
    private let lock = NSLock()
    private var usable = true

    var isUsable: Bool {
        lock.lock()
        defer { lock.unlock() }
        return usable
    }

    func set(_ value: Bool) {
        lock.lock()
        usable = value
        lock.unlock()
    }
}

/// One PostgreSQL connection, isolated to a thread of its own.
///
/// Every method that touches libpq runs on the connection's ``PGThreadExecutor`` thread, so a
/// blocking call blocks only that thread and never Swift's cooperative pool. Debug builds
/// check this before every libpq call. Results are decoded on that thread; a `PGresult` never
/// leaves it.
///
/// Cancelling the task awaiting ``query(_:)`` sends a cancel request to the server, which stops
/// the running statement; the connection is then marked unusable so that a late cancel
/// cannot hit the next statement.
public actor PGConnection {
    private let executor: PGThreadExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private var conn: OpaquePointer?
    private let cancelHandle: PGCancelHandle
    private var prepared: [String: String] = [:]
    private var broken = false
    private let health = PGConnectionHealth()
    /// The backend's process id (`pg_backend_pid()`), for diagnostics and tests.
    public nonisolated let backendPID: Int32
    /// Statements this connection has sent.
    public private(set) var statementsSent = 0
    let logger: Logger

    /// The most statements kept prepared per connection; further ones run unprepared.
    static let preparedStatementLimit = 512

    /// Opens a connection. `PQconnectdbParams` runs on the new connection's own thread.
    /// - Throws: ``PGError`` `.connectionFailed` (redacted libpq reason) or `.invalidConfiguration`.
    public static func connect(_ configuration: PGConfiguration, logger: Logger) async throws -> PGConnection {
        let parameters = try configuration.connectParameters()
        let executor = PGThreadExecutor(name: "pg-conn")
        let opened: Result<OpaquePointer, PGError> = await withCheckedContinuation { continuation in
            // Run the blocking connect on the connection's own thread.
            executor.enqueueBlocking {
                continuation.resume(returning: Self.open(parameters))
            }
        }
        switch opened {
        case .success(let conn):
            return PGConnection(conn: conn, executor: executor, logger: logger)
        case .failure(let error):
            executor.shutdown()
            throw error
        }
    }

    private init(conn: OpaquePointer, executor: PGThreadExecutor, logger: Logger) {
        self.conn = conn
        self.executor = executor
        self.cancelHandle = PGCancelHandle(PQgetCancel(conn))
        self.backendPID = PQbackendPID(conn)
        self.logger = logger
    }

    isolated deinit {
        if let conn { PQfinish(conn) }
        cancelHandle.free()
        executor.shutdown()
    }

    private static func open(_ parameters: [(String, String)]) -> Result<OpaquePointer, PGError> {
        let keys = parameters.map { strdup($0.0) }
        let values = parameters.map { strdup($0.1) }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keyPointers: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
        var valuePointers: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
        guard let conn = PQconnectdbParams(&keyPointers, &valuePointers, 1) else {
            return .failure(PGError(.connectionFailed, message: "libpq could not allocate a connection"))
        }
        if PQstatus(conn) != CONNECTION_OK {
            let reason = String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
            PQfinish(conn)
            return .failure(
                PGError(
                    .connectionFailed,
                    message: "could not connect to PostgreSQL: \(Redaction.redactQuoted(reason, keeping: []))"))
        }
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        return .success(conn)
    }

    /// Runs `body` with the raw connection after checking, in debug builds, that the caller is
    /// on this connection's thread.
    private func withPGconn<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        #if DEBUG
        precondition(executor.isCurrentThread, "libpq called off its connection's thread")
        #endif
        guard let conn, !broken else {
            throw PGError(.connectionClosed, message: "the connection is closed")
        }
        return try body(conn)
    }

    /// Whether the connection can take another statement: open, not broken, no cancel
    /// requested, outside a transaction (as of its last statement). Callable from any thread.
    public nonisolated var isUsable: Bool {
        health.isUsable && !cancelHandle.requested
    }

    /// Recomputes ``isUsable`` on the connection's thread, after anything that may change it.
    private func refreshHealth() {
        guard let conn, !broken else { return health.set(false) }
        health.set(PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE)
    }

    /// Marks the connection unusable; the pool closes it instead of reusing it.
    public func invalidate() {
        broken = true
        health.set(false)
    }

    /// Closes the connection.
    public func close() {
        if let conn {
            #if DEBUG
            precondition(executor.isCurrentThread, "libpq called off its connection's thread")
            #endif
            PQfinish(conn)
        }
        conn = nil
        health.set(false)
        cancelHandle.free()
    }

    /// Runs one statement with its bound parameters and returns its rows.
    ///
    /// Cancelling the awaiting task cancels the statement on the server and throws
    /// ``PGError`` of kind `.cancelled`.
    @discardableResult
    public nonisolated func query(_ query: PGQuery) async throws -> PGRows {
        if Task.isCancelled {
            throw PGError(.cancelled, message: "the task was cancelled before the statement was sent", queryName: query.name)
        }
        let handle = cancelHandle
        return try await withTaskCancellationHandler {
            try await self.run(query)
        } onCancel: {
            handle.requestCancel()
        }
    }

    /// Runs SQL text that may hold several statements (a migration file), with the simple query
    /// protocol and no parameters. Only for trusted text shipped with the program.
    public func executeScript(unsafeSQL sql: String, name: String) throws {
        defer { refreshHealth() }
        try withPGconn { conn in
            guard let result = PQexec(conn, sql) else {
                throw connectionError(conn, name: name)
            }
            defer { PQclear(result) }
            _ = try self.rows(from: result, conn: conn, name: name)
        }
    }

    private func run(_ query: PGQuery) throws -> PGRows {
        defer { refreshHealth() }
        do {
            let rows = try withPGconn { conn in try self.execute(query, conn: conn) }
            return rows
        } catch var error as PGError {
            if cancelHandle.requested {
                broken = true
                if error.sqlState == .queryCanceled || error.kind == .connectionClosed {
                    error = PGError(.cancelled, message: "the statement was cancelled because its task was cancelled", sqlState: error.sqlState, queryName: query.name)
                }
            }
            if error.invalidatesConnection { broken = true }
            throw error
        }
    }

    private func execute(_ query: PGQuery, conn: OpaquePointer) throws -> PGRows {
        statementsSent += 1
        let count = query.binds.count
        var buffers: [UnsafeMutablePointer<CChar>?] = []
        var lengths: [Int32] = []
        var formats: [Int32] = []
        buffers.reserveCapacity(count)
        defer { buffers.forEach { $0?.deallocate() } }
        for (i, bind) in query.binds.enumerated() {
            switch bind {
            case .null:
                buffers.append(nil)
                lengths.append(0)
                formats.append(0)
            case .text(let text):
                var utf8 = Array(text.utf8)
                if utf8.contains(0) {
                    throw PGError(
                        .invalidConfiguration,
                        message: "parameter $\(i + 1) contains a NUL byte, which PostgreSQL text cannot store; remove it or send the value as bytea",
                        queryName: query.name)
                }
                utf8.append(0)
                let p = UnsafeMutablePointer<CChar>.allocate(capacity: utf8.count)
                utf8.withUnsafeBufferPointer { src in
                    src.withMemoryRebound(to: CChar.self) { p.initialize(from: $0.baseAddress!, count: utf8.count) }
                }
                buffers.append(p)
                lengths.append(Int32(utf8.count - 1))
                formats.append(0)
            case .binary(let bytes):
                let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
                bytes.withUnsafeBufferPointer { src in
                    src.withMemoryRebound(to: CChar.self) { if let base = $0.baseAddress { p.initialize(from: base, count: bytes.count) } }
                }
                buffers.append(p)
                lengths.append(Int32(bytes.count))
                formats.append(1)
            }
        }
        let values: [UnsafePointer<CChar>?] = buffers.map { $0.map { UnsafePointer($0) } }
        let name = query.name ?? "query"
        let result: OpaquePointer?
        if query.prepare, let statement = try preparedName(for: query, conn: conn) {
            result = PQexecPrepared(conn, statement, Int32(count), values, lengths, formats, 0)
        } else {
            result = PQexecParams(conn, query.sql, Int32(count), nil, values, lengths, formats, 0)
        }
        guard let result else { throw connectionError(conn, name: name) }
        defer { PQclear(result) }
        return try rows(from: result, conn: conn, name: name)
    }

    /// Prepares the statement on first use and returns its server-side name, or `nil` when the
    /// per-connection cache is full.
    private func preparedName(for query: PGQuery, conn: OpaquePointer) throws -> String? {
        if let name = prepared[query.sql] { return name }
        guard prepared.count < Self.preparedStatementLimit else { return nil }
        let name = "ij_\(prepared.count)"
        guard let result = PQprepare(conn, name, query.sql, Int32(query.binds.count), nil) else {
            throw connectionError(conn, name: query.name ?? "query")
        }
        defer { PQclear(result) }
        _ = try rows(from: result, conn: conn, name: query.name ?? "query")
        prepared[query.sql] = name
        return name
    }

    private func connectionError(_ conn: OpaquePointer, name: String) -> PGError {
        let reason = String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
        broken = true
        return PGError(
            .connectionClosed, message: "the connection to PostgreSQL broke: \(Redaction.redactQuoted(reason, keeping: []))",
            queryName: name)
    }

    private func rows(from result: OpaquePointer, conn: OpaquePointer, name: String) throws -> PGRows {
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return PGRows(columns: PGColumns(names: [], types: []), cells: [], affectedRows: Self.affected(result))
        case PGRES_TUPLES_OK:
            let rowCount = Int(PQntuples(result))
            let columnCount = Int(PQnfields(result))
            var names: [String] = []
            var types: [UInt32] = []
            for c in 0..<columnCount {
                names.append(String(cString: PQfname(result, Int32(c))))
                types.append(UInt32(PQftype(result, Int32(c))))
            }
            var cells: [[String?]] = []
            cells.reserveCapacity(rowCount)
            for r in 0..<rowCount {
                var row: [String?] = []
                row.reserveCapacity(columnCount)
                for c in 0..<columnCount {
                    if PQgetisnull(result, Int32(r), Int32(c)) != 0 {
                        row.append(nil)
                    } else {
                        row.append(String(cString: PQgetvalue(result, Int32(r), Int32(c))))
                    }
                }
                cells.append(row)
            }
            return PGRows(columns: PGColumns(names: names, types: types), cells: cells, affectedRows: rowCount)
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR:
            throw serverError(result, conn: conn, name: name)
        default:
            broken = true
            throw PGError(
                .protocolViolation,
                message: "unexpected libpq result \(String(cString: PQresStatus(PQresultStatus(result))))", queryName: name)
        }
    }

    private static func affected(_ result: OpaquePointer) -> Int {
        guard let tuples = PQcmdTuples(result) else { return 0 }
        return Int(String(cString: tuples)) ?? 0
    }

    private func serverError(_ result: OpaquePointer, conn: OpaquePointer, name: String) -> PGError {
        func field(_ code: Character) -> String? {
            guard let value = PQresultErrorField(result, Int32(code.asciiValue!)) else { return nil }
            return String(cString: value)
        }
        let sqlState = field("C").map { SQLState($0) }
        let message = field("M") ?? String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
        if sqlState == nil || PQstatus(conn) != CONNECTION_OK {
            broken = true
            if sqlState == nil {
                return PGError(.connectionClosed, message: "the connection to PostgreSQL broke: \(Redaction.redactQuoted(message, keeping: []))", queryName: name)
            }
        }
        return PGError(
            .server, message: message, sqlState: sqlState, detail: field("D"), hint: field("H"),
            constraint: field("n"), table: field("t"), column: field("c"), dataType: field("d"), queryName: name)
    }
}
