import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A small HTTP/1.1 server on 127.0.0.1 for backend tests: each request gets the next scripted
/// response (the last one repeats). Runs on a thread of its own; stops when the test calls
/// ``stop()``.
public final class TestHTTPServer: @unchecked Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var body: [UInt8]
        /// Wait this long before answering (a slow server).
        public var delay: Double
        /// Header lines beyond the content type and length (`Retry-After: 2`).
        public var headers: [String]
        public init(status: Int, body: [UInt8], delay: Double = 0, headers: [String] = []) {
            self.status = status
            self.body = body
            self.delay = delay
            self.headers = headers
        }
        public static func json(_ status: Int, _ text: String, delay: Double = 0, headers: [String] = []) -> Response {
            Response(status: status, body: Array(text.utf8), delay: delay, headers: headers)
        }
    }

    public let port: Int
    private let fd: Int32
    private let lock = NSLock()
    private var script: [Response]
    private var requests: [(path: String, headers: [String: String], body: [UInt8])] = []
    private var stopped = false

    public init(_ script: [Response]) throws {
        self.script = script
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
        guard bound == 0, listen(fd, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
        let thread = Thread { [self] in self.serve() }
        thread.start()
    }

    public var url: URL { URL(string: "http://127.0.0.1:\(port)")! }

    /// The requests received so far: path, headers (lower-cased names) and body.
    public var received: [(path: String, headers: [String: String], body: [UInt8])] {
        lock.lock()
        defer { lock.unlock() }
        return requests
    }

    public func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private func serve() {
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 { return }
            Thread { [self] in self.handle(client) }.start()
        }
    }

    private func handle(_ client: Int32) {
        defer { close(client) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var headerEnd: Int?
        var contentLength = 0
        while true {
            let n = read(client, &buffer, buffer.count)
            if n <= 0 { return }
            data += buffer[0..<n]
            if headerEnd == nil, let r = data.firstRange(of: Array("\r\n\r\n".utf8)) {
                headerEnd = r.upperBound
                let head = String(decoding: data[..<r.lowerBound], as: UTF8.self)
                for line in head.split(separator: "\r\n").dropFirst() {
                    let parts = line.split(separator: ":", maxSplits: 1)
                    if parts.count == 2, parts[0].lowercased() == "content-length" {
                        contentLength = Int(parts[1].trimmingCharacters(in: .whitespaces)) ?? 0
                    }
                }
            }
            if let headerEnd, data.count >= headerEnd + contentLength { break }
        }
        let end = headerEnd!
        let head = String(decoding: data[..<(end - 4)], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        let path = lines.first.map { String($0.split(separator: " ").dropFirst().first ?? "") } ?? ""
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        lock.lock()
        requests.append((path, headers, Array(data[end...])))
        let response = script.count > 1 ? script.removeFirst() : script[0]
        lock.unlock()
        if response.delay > 0 { usleep(useconds_t(response.delay * 1_000_000)) }
        let reason = response.status == 200 ? "OK" : "Status"
        let extra = response.headers.map { $0 + "\r\n" }.joined()
        let header = "HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(response.body.count)\r\n\(extra)Connection: close\r\n\r\n"
        let out = Array(header.utf8) + response.body
        _ = out.withUnsafeBufferPointer { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
}
