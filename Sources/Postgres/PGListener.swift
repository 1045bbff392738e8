import CLibPQ
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// What a ``PGListener`` delivers.
public enum PGListenerEvent: Sendable, Equatable {
    /// The listener (re)connected and is listening on every channel. Notifications sent while it
    /// was disconnected are lost, so a consumer should re-check whatever it waits for.
    case connected
    /// A `NOTIFY` on one of the channels.
    case notification(channel: String, payload: String)
}

/// LISTEN on a dedicated connection, delivered as an `AsyncSequence`.
///
/// The listener runs on a thread of its own: it polls the connection's socket, consumes input
/// and yields notifications. When the connection breaks (server restart, terminated backend,
/// network) it reconnects with capped, jittered backoff, listens again and yields
/// ``PGListenerEvent/connected``. A notification is a wake-up hint, never the only signal:
/// consumers keep polling too.
public final class PGListener: AsyncSequence, Sendable {
    public typealias Element = PGListenerEvent

    private let stream: AsyncStream<PGListenerEvent>
    private let state: State

    private final class State: @unchecked Sendable {
        let lock = NSLock()
        var stopped = false
        var connectedBackendPID: Int32 = 0
        var reconnects = 0
        var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
    }

    /// Starts listening.
    /// - Parameters:
    ///   - configuration: where to connect; its statement timeout applies to LISTEN itself.
    ///   - channels: channel names, used as quoted identifiers.
    ///   - pollInterval: how often the thread wakes to check for shutdown. Defaults to 250 ms.
    ///   - maxBackoff: the cap on reconnect delays. Defaults to 5 s.
    public init(
        configuration: PGConfiguration, channels: [String], pollInterval: Duration = .milliseconds(250),
        maxBackoff: Duration = .seconds(5), logger: Logger
    ) {
        let (stream, continuation) = AsyncStream<PGListenerEvent>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        self.stream = stream
        let state = State()
        self.state = state
        let pollMs = Int32(pollInterval.components.seconds * 1000 + pollInterval.components.attoseconds / 1_000_000_000_000_000)
        let maxBackoffMs = Double(maxBackoff.components.seconds * 1000)
        let thread = Thread {
            Self.run(
                configuration: configuration, channels: channels, pollMs: Swift.max(pollMs, 10), maxBackoffMs: Swift.max(maxBackoffMs, 100),
                state: state, continuation: continuation, logger: logger)
        }
        thread.name = "pg-listen"
        thread.start()
        continuation.onTermination = { _ in
            state.lock.lock()
            state.stopped = true
            state.lock.unlock()
        }
    }

    /// Stops the thread and finishes the sequence.
    public func stop() {
        state.lock.lock()
        state.stopped = true
        state.lock.unlock()
    }

    /// The backend pid of the current listening connection (0 while disconnected).
    public var backendPID: Int32 {
        state.lock.lock()
        defer { state.lock.unlock() }
        return state.connectedBackendPID
    }

    /// How many times the listener reconnected after losing its connection.
    public var reconnects: Int {
        state.lock.lock()
        defer { state.lock.unlock() }
        return state.reconnects
    }

    public func makeAsyncIterator() -> AsyncStream<PGListenerEvent>.Iterator {
        stream.makeAsyncIterator()
    }

    private static func run(
        configuration: PGConfiguration, channels: [String], pollMs: Int32, maxBackoffMs: Double, state: State,
        continuation: AsyncStream<PGListenerEvent>.Continuation, logger: Logger
    ) {
        defer { continuation.finish() }
        var attempt = 0
        var everConnected = false
        while !state.isStopped {
            guard let conn = connect(configuration, channels: channels, logger: logger) else {
                attempt += 1
                let capped = Swift.min(maxBackoffMs, 100 * pow(2, Double(Swift.min(attempt, 16))))
                sleepUnlessStopped(ms: Double.random(in: 0...capped), state: state)
                continue
            }
            attempt = 0
            state.lock.lock()
            state.connectedBackendPID = PQbackendPID(conn)
            if everConnected { state.reconnects += 1 }
            state.lock.unlock()
            everConnected = true
            continuation.yield(.connected)
            listen(conn, pollMs: pollMs, state: state, continuation: continuation)
            state.lock.lock()
            state.connectedBackendPID = 0
            state.lock.unlock()
            PQfinish(conn)
            if !state.isStopped {
                logger.info("listener connection lost; reconnecting", metadata: ["listener.channels": "\(channels.count)"])
            }
        }
    }

    private static func connect(_ configuration: PGConfiguration, channels: [String], logger: Logger) -> OpaquePointer? {
        guard let parameters = try? configuration.connectParameters() else { return nil }
        let keys = parameters.map { strdup($0.0) }
        let values = parameters.map { strdup($0.1) }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keyPointers: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) } + [nil]
        var valuePointers: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) } + [nil]
        guard let conn = PQconnectdbParams(&keyPointers, &valuePointers, 1) else { return nil }
        guard PQstatus(conn) == CONNECTION_OK else {
            PQfinish(conn)
            return nil
        }
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        for channel in channels {
            // The channel is an identifier quoted by the wrapper; LISTEN takes no parameters.
            guard let result = PQexec(conn, "LISTEN " + PGQuery.quoteIdentifier(channel)) else {
                PQfinish(conn)
                return nil
            }
            let ok = PQresultStatus(result) == PGRES_COMMAND_OK
            PQclear(result)
            if !ok {
                PQfinish(conn)
                return nil
            }
        }
        return conn
    }

    private static func listen(
        _ conn: OpaquePointer, pollMs: Int32, state: State, continuation: AsyncStream<PGListenerEvent>.Continuation
    ) {
        let fd = PQsocket(conn)
        guard fd >= 0 else { return }
        var idleTicks = 0
        while !state.isStopped {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, pollMs)
            if ready < 0 {
                if errno == EINTR { continue }
                return
            }
            if ready == 0 {
                // Quiet: every ~10 s make sure the server is still there (a half-open
                // connection otherwise goes unnoticed until TCP gives up).
                idleTicks += 1
                if idleTicks * Int(pollMs) >= 10_000 {
                    idleTicks = 0
                    guard let result = PQexec(conn, "SELECT 1") else { return }
                    let ok = PQresultStatus(result) == PGRES_TUPLES_OK
                    PQclear(result)
                    if !ok { return }
                } else {
                    continue
                }
            }
            if PQconsumeInput(conn) == 0 { return }
            while let notify = PQnotifies(conn) {
                let channel = String(cString: notify.pointee.relname)
                let payload = String(cString: notify.pointee.extra)
                PQfreemem(notify)
                continuation.yield(.notification(channel: channel, payload: payload))
            }
            if PQstatus(conn) != CONNECTION_OK { return }
        }
    }

    private static func sleepUnlessStopped(ms: Double, state: State) {
        var remaining = ms
        while remaining > 0, !state.isStopped {
            let step = Swift.min(remaining, 50)
            usleep(useconds_t(step * 1000))
            remaining -= step
        }
    }
}
