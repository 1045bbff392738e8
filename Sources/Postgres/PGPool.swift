import Foundation
import Logging

/// A bounded pool of ``PGConnection``s.
///
/// The pool never blocks a thread: it only leases connections, each of which runs libpq on its
/// own thread. A connection that broke (server restart, `pg_terminate_backend`, a cancelled
/// statement) is closed when it comes back and a fresh one is opened on the next lease. When
/// the database cannot be reached the lease fails at once with ``PGError`` `.connectionFailed`
/// (after libpq's `connect_timeout`) instead of queueing callers behind a dead server.
public actor PGPool {
    /// The pool's settings.
    public struct Options: Sendable {
        /// Most connections open at once. Defaults to `4`.
        public var maxConnections: Int = 4
        /// How long a lease waits for a busy pool before failing. Defaults to `10` seconds.
        public var acquireTimeout: Duration = .seconds(10)
        public init(maxConnections: Int = 4, acquireTimeout: Duration = .seconds(10)) {
            self.maxConnections = maxConnections
            self.acquireTimeout = acquireTimeout
        }
    }

    public nonisolated let configuration: PGConfiguration
    public nonisolated let options: Options
    private let logger: Logger
    private var idle: [PGConnection] = []
    private var openCount = 0
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var waiterOrder: [UInt64] = []
    private var nextWaiter: UInt64 = 0
    private var closed = false
    /// Connections opened over the pool's life (a reconnect counter for metrics and tests).
    public private(set) var connectionsOpened = 0
    /// Connections found broken (server restart, terminated backend, network) and dropped;
    /// each is replaced by a new connection when next needed.
    public private(set) var connectionsLost = 0
    /// Statements sent by connections this pool has closed.
    private var statementsOfClosedConnections = 0

    public init(configuration: PGConfiguration, options: Options = Options(), logger: Logger) {
        precondition(options.maxConnections >= 1, "a pool needs at least one connection")
        self.configuration = configuration
        self.options = options
        self.logger = logger
    }

    /// The number of connections currently open (idle or leased).
    public var openConnections: Int { openCount }

    /// Statements sent through this pool: by its idle connections and every connection it has
    /// closed (after ``close()``, all of them). Each connection counts its own, on its own
    /// thread, so counting costs a statement nothing.
    public var statementsSent: Int {
        get async {
            var total = statementsOfClosedConnections
            for connection in idle { total += await connection.statementsSent }
            return total
        }
    }

    private func retire(_ connection: PGConnection) async {
        statementsOfClosedConnections += await connection.statementsSent
        await connection.close()
    }

    /// Leases a connection for the duration of `body`.
    @discardableResult
    public nonisolated func withConnection<T: Sendable>(
        _ body: (PGConnection) async throws -> T
    ) async throws -> T {
        let connection = try await acquire()
        do {
            let value = try await body(connection)
            await release(connection)
            return value
        } catch {
            if let pgError = error as? PGError, pgError.invalidatesConnection {
                await connection.invalidate()
            }
            await release(connection)
            throw error
        }
    }

    /// Runs `body` in a transaction: `BEGIN`, then `COMMIT`, or `ROLLBACK` when `body` throws.
    /// - Throws: ``PGTransactionError`` naming the phase that failed.
    @discardableResult
    public nonisolated func withTransaction<T: Sendable>(
        _ body: (PGConnection) async throws -> T
    ) async throws -> T {
        try await withConnection { connection in
            try await connection.transaction(body)
        }
    }

    /// Runs one statement on a leased connection.
    @discardableResult
    public nonisolated func query(_ query: PGQuery) async throws -> PGRows {
        try await withConnection { try await $0.query(query) }
    }

    /// Closes every idle connection and refuses new leases.
    public func close() async {
        closed = true
        let connections = idle
        idle.removeAll()
        openCount -= connections.count
        for connection in connections { await retire(connection) }
        for id in waiterOrder { waiters.removeValue(forKey: id)?.resume() }
        waiterOrder.removeAll()
    }

    /// Closes idle connections, e.g. after the server restarted, so the next lease reconnects.
    public func drainIdle() async {
        let connections = idle
        idle.removeAll()
        openCount -= connections.count
        for connection in connections { await retire(connection) }
    }

    private func acquire() async throws -> PGConnection {
        let deadline = ContinuousClock.now + options.acquireTimeout
        while true {
            if closed { throw PGError(.poolClosed, message: "the connection pool is closed") }
            while let connection = idle.popLast() {
                if connection.isUsable { return connection }
                openCount -= 1
                connectionsLost += 1
                await retire(connection)
            }
            if openCount < options.maxConnections {
                openCount += 1
                do {
                    let connection = try await PGConnection.connect(configuration, logger: logger)
                    connectionsOpened += 1
                    return connection
                } catch {
                    openCount -= 1
                    wakeOne()
                    throw error
                }
            }
            if ContinuousClock.now >= deadline {
                throw PGError(
                    .poolTimeout,
                    message: "no database connection became free within \(options.acquireTimeout) (pool of \(options.maxConnections)); raise the pool size or lower the concurrency")
            }
            await waitForRelease(until: deadline)
        }
    }

    private func release(_ connection: PGConnection) async {
        if !closed, connection.isUsable {
            idle.append(connection)
        } else {
            if !closed { connectionsLost += 1 }
            openCount -= 1
            await retire(connection)
        }
        wakeOne()
    }

    private func wakeOne() {
        guard !waiterOrder.isEmpty else { return }
        let id = waiterOrder.removeFirst()
        waiters.removeValue(forKey: id)?.resume()
    }

    private func waitForRelease(until deadline: ContinuousClock.Instant) async {
        let id = nextWaiter
        nextWaiter += 1
        let timer = Task { [weak self] in
            try? await Task.sleep(until: deadline, clock: .continuous)
            await self?.timeOut(id)
        }
        await withCheckedContinuation { continuation in
            waiters[id] = continuation
            waiterOrder.append(id)
        }
        timer.cancel()
    }

    private func timeOut(_ id: UInt64) {
        if let continuation = waiters.removeValue(forKey: id) {
            waiterOrder.removeAll { $0 == id }
            continuation.resume()
        }
    }
}

extension PGConnection {
    /// Runs `body` in a transaction on this connection: `BEGIN`, then `COMMIT`, or `ROLLBACK`
    /// when `body` throws.
    /// - Throws: ``PGTransactionError`` naming the phase that failed.
    public nonisolated func transaction<T: Sendable>(_ body: (PGConnection) async throws -> T) async throws -> T {
        do {
            try await query(PGQuery(unsafeSQL: "BEGIN", name: "BEGIN"))
        } catch {
            throw PGTransactionError(phase: .begin, underlying: error)
        }
        let value: T
        do {
            value = try await body(self)
        } catch {
            var rollbackError: PGError?
            do {
                try await query(PGQuery(unsafeSQL: "ROLLBACK", name: "ROLLBACK"))
            } catch let e as PGError {
                rollbackError = e
                await invalidate()
            } catch {}
            if let pgError = error as? PGError, pgError.invalidatesConnection { await invalidate() }
            throw PGTransactionError(phase: .body, underlying: error, rollbackError: rollbackError)
        }
        do {
            try await query(PGQuery(unsafeSQL: "COMMIT", name: "COMMIT"))
        } catch {
            await invalidate()
            throw PGTransactionError(phase: .commit, underlying: error)
        }
        return value
    }

    /// `SET LOCAL statement_timeout` for the rest of the current transaction.
    public nonisolated func setLocalStatementTimeout(_ timeout: Duration) async throws {
        let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let q: PGQuery = "SELECT set_config('statement_timeout', \(String(ms)), true)"
        try await query(q.named("SET LOCAL statement_timeout"))
    }
}

extension PGConnection {
    /// Runs one statement and discards the rows.
    @discardableResult
    public nonisolated func execute(_ query: PGQuery) async throws -> Int {
        try await self.query(query).affectedRows
    }
}

extension PGPool {
    /// The first column of the first row, decoded (for `SELECT count(*) …` and the like).
    public nonisolated func scalar<T: PGDecodable>(_ query: PGQuery, as type: T.Type = T.self) async throws -> T {
        try await scalar(as: type, query)
    }

    /// The first column of the first row, decoded as `type`.
    public nonisolated func scalar<T: PGDecodable>(as type: T.Type, _ query: PGQuery) async throws -> T {
        let rows = try await self.query(query)
        guard let row = rows.first else {
            throw PGError(.decoding, message: "expected one row, got none", queryName: query.name)
        }
        return try row.decode(0, as: type)
    }
}
