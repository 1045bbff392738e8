import Foundation
import Metrics
import Prometheus

#if canImport(Glibc)
import Glibc
#endif

/// Serves `GET /metrics` (Prometheus text format) and `GET /healthz` for `imagejobs worker
/// --metrics-port`. A scrape is one short request, so a blocking accept loop on a thread of
/// its own is all it needs: no event loop, and nothing on Swift's cooperative pool.
final class MetricsServer: @unchecked Sendable {
    let registry: PrometheusCollectorRegistry
    let port: Int
    private let socketFD: Int32
    private let stopLock = NSLock()
    private var stopped = false

    /// Binds the port (failing with a clear message when it is taken) and starts serving.
    init(registry: PrometheusCollectorRegistry, host: String, port: Int) throws {
        self.registry = registry
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CLIError.badInput("--metrics-port: could not open a socket (errno \(errno))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
            close(fd)
            throw CLIError.badInput("--metrics-host: \"\(host.prefix(40))\" is not an IPv4 address (e.g. 0.0.0.0 or 127.0.0.1)")
        }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CLIError.badInput("--metrics-port \(port): cannot listen on \(host):\(port) (\(reason)); choose a free port")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        self.socketFD = fd
        let thread = Thread { [self] in serve() }
        thread.name = "imagejobs-metrics"
        thread.start()
    }

    func stop() {
        stopLock.lock()
        stopped = true
        stopLock.unlock()
    }

    private var isStopped: Bool {
        stopLock.lock()
        defer { stopLock.unlock() }
        return stopped
    }

    private func serve() {
        defer { close(socketFD) }
        while !isStopped {
            var pfd = pollfd(fd: socketFD, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 200) > 0 else { continue }
            let client = accept(socketFD, nil, nil)
            guard client >= 0 else { continue }
            handle(client)
            close(client)
        }
    }

    private func handle(_ client: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        // Read the request head (a scrape sends no body); cap it at 8 KiB.
        while request.count < 8192 {
            let n = recv(client, &buffer, buffer.count, 0)
            if n <= 0 { break }
            request.append(contentsOf: buffer[0..<n])
            if request.count >= 4, request.suffix(4) == [13, 10, 13, 10] { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        let (status, contentType, body): (String, String, [UInt8])
        if parts.count >= 2, parts[0] == "GET" || parts[0] == "HEAD" {
            let path = parts[1].split(separator: "?").first.map(String.init) ?? ""
            switch path {
            case "/metrics":
                (status, contentType, body) = ("200 OK", "text/plain; version=0.0.4; charset=utf-8", registry.emitToBuffer())
            case "/healthz":
                (status, contentType, body) = ("200 OK", "text/plain; charset=utf-8", Array("ok\n".utf8))
            default:
                (status, contentType, body) = ("404 Not Found", "text/plain; charset=utf-8", Array("try /metrics\n".utf8))
            }
        } else {
            (status, contentType, body) = ("405 Method Not Allowed", "text/plain; charset=utf-8", Array("GET only\n".utf8))
        }
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        var out = Array(head.utf8)
        if parts.first != "HEAD" { out += body }
        var sent = 0
        while sent < out.count {
            let n = out[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }
}

extension MetricsServer {
    /// Bootstraps swift-metrics with a Prometheus registry (once per process) and serves it.
    static func start(host: String, port: Int) throws -> MetricsServer {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Image generation takes seconds to minutes; queue waits span milliseconds to minutes.
        let long: [Duration] = [
            .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(120), .seconds(300),
        ]
        factory.durationHistogramBuckets = [
            "imagejobs_handler_duration_seconds": long,
            "imagejobs_queue_wait_seconds": [.milliseconds(1), .milliseconds(5)] + long,
        ]
        let server = try MetricsServer(registry: registry, host: host, port: port)
        MetricsSystem.bootstrap(factory)
        return server
    }
}
