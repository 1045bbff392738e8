import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A Server-Sent Events client over a plain socket (URLSession on Linux cannot stream a
/// response): sends one GET, then reads events as they arrive, on a thread of its own.
public final class EventStreamClient: @unchecked Sendable {
    public struct Event: Sendable, Equatable {
        public var id: String?
        public var event: String?
        public var data: String
    }

    /// The response's status line (`HTTP/1.1 200 OK`), once read.
    public private(set) var statusLine = ""
    public let events: AsyncStream<Event>
    private let fd: Int32
    /// Set (under the lock) when the reading thread closes `fd`: from then on the number may
    /// belong to another socket of this process (a database connection), which `disconnect`
    /// must not touch.
    private var closed = false
    private let lock = NSLock()

    /// Connects and sends `GET path` with the headers given.
    public init(port: Int, path: String, headers: [String: String]) throws {
        let fd = try Loopback.connect(port: port)
        self.fd = fd
        let request = (["GET \(path) HTTP/1.1", "Host: 127.0.0.1:\(port)", "Accept: text/event-stream", "Connection: close"]
            + headers.map { "\($0.key): \($0.value)" }).joined(separator: "\r\n") + "\r\n\r\n"
        _ = request.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, 0) }
        let (events, continuation) = AsyncStream<Event>.makeStream()
        self.events = events
        let thread = Thread { [self] in self.read(continuation) }
        thread.start()
    }

    /// Closes the connection (the server sees the client go away).
    public func disconnect() {
        lock.lock()
        defer { lock.unlock() }
        if !closed { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// The next event within `timeout`, or `nil` (timed out, or the server ended the stream).
    public func next(timeout: Duration = .seconds(10), iterator: inout AsyncStream<Event>.Iterator) async -> Event? {
        let deadline = Task { try await Task.sleep(for: timeout); disconnect() }
        defer { deadline.cancel() }
        return await iterator.next()
    }

    private func read(_ continuation: AsyncStream<Event>.Continuation) {
        defer {
            lock.lock()
            closed = true
            close(fd)
            lock.unlock()
            continuation.finish()
        }
        var head = ""
        var raw = ""
        var pending = ""
        var headersDone = false
        var chunked = false
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return }
            let text = String(decoding: buffer[0..<n], as: UTF8.self)
            if !headersDone {
                head += text
                guard let end = head.range(of: "\r\n\r\n") else { continue }
                let lines = head[..<end.lowerBound]
                statusLine = String(lines.split(separator: "\r\n").first ?? "")
                chunked = lines.lowercased().contains("transfer-encoding: chunked")
                raw = String(head[end.upperBound...])
                headersDone = true
            } else {
                raw += text
            }
            if chunked {
                pending += Self.dechunk(&raw)
            } else {
                pending += raw
                raw = ""
            }
            while let end = pending.range(of: "\n\n") {
                let block = pending[..<end.lowerBound]
                pending = String(pending[end.upperBound...])
                var event = Event(id: nil, event: nil, data: "")
                var isEvent = false
                for line in block.split(separator: "\n") {
                    if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)) }
                    if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)) }
                    if line.hasPrefix("data: ") {
                        event.data += String(line.dropFirst(6))
                        isEvent = true
                    }
                }
                if isEvent { continuation.yield(event) }
            }
        }
    }

    /// Takes the complete chunks' payload out of `raw` (leaving a partial chunk in it).
    private static func dechunk(_ raw: inout String) -> String {
        var out = ""
        while let lineEnd = raw.range(of: "\r\n") {
            guard let size = Int(raw[..<lineEnd.lowerBound], radix: 16) else { break }
            let start = lineEnd.upperBound
            guard raw.utf8.count - raw.utf8.distance(from: raw.startIndex, to: start) >= size + 2 else { break }
            let end = raw.utf8.index(start, offsetBy: size)
            out += raw[start..<end]
            raw = String(raw[raw.utf8.index(end, offsetBy: 2)...])
            if size == 0 { break }
        }
        return out
    }
}
