import Foundation
import JobEngine

#if canImport(Glibc)
import Glibc
#endif

/// A headless Chromium driven through chromedriver's W3C WebDriver protocol: the dashboard's
/// tests click and type as a person does and read what the page shows after its scripts ran.
/// Needs Debian's `chromium` and `chromium-driver` (`make deps` installs them); the paths can be
/// set with `IMAGEJOBS_CHROMIUM` and `IMAGEJOBS_CHROMEDRIVER`.
public final class Browser: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    private let driver: Process
    private let session: String
    private let base: String
    private let profile: URL

    private init(driver: Process, base: String, session: String, profile: URL) {
        self.driver = driver
        self.base = base
        self.session = session
        self.profile = profile
    }

    /// Starts chromedriver on a free loopback port and opens a headless browser session.
    public static func start() async throws -> Browser {
        let environment = ProcessInfo.processInfo.environment
        let chromedriver = environment["IMAGEJOBS_CHROMEDRIVER"] ?? "/usr/bin/chromedriver"
        let chromium = environment["IMAGEJOBS_CHROMIUM"] ?? "/usr/bin/chromium"
        for path in [chromedriver, chromium] where !FileManager.default.isExecutableFile(atPath: path) {
            throw Failure(description: "\(path) is missing: install chromium and chromium-driver (make deps)")
        }
        let port = try freePort()
        let driver = Process()
        driver.executableURL = URL(fileURLWithPath: chromedriver)
        driver.arguments = ["--port=\(port)", "--allowed-ips=127.0.0.1"]
        driver.standardOutput = FileHandle.nullDevice
        driver.standardError = FileHandle.nullDevice
        try driver.run()
        let base = "http://127.0.0.1:\(port)"
        do {
            var ready = false
            var last = "no answer"
            for _ in 0..<100 where !ready {
                do {
                    let status = try await call("GET", base + "/status", nil)
                    ready = status["value"]?["ready"] == .bool(true)
                    last = "\(status)"
                } catch {
                    last = "\(error)"
                }
                if !ready { try await Task.sleep(for: .milliseconds(100)) }
            }
            guard ready else { throw Failure(description: "chromedriver did not start on port \(port): \(last)") }
            let profile = FileManager.default.temporaryDirectory.appendingPathComponent("imagejobs-browser-\(UUID().uuidString)")
            let options: JSONValue = .object([
                "binary": .string(chromium),
                "args": .array(
                    ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--user-data-dir=\(profile.path)"].map(JSONValue.string)),
            ])
            let answer = try await call(
                "POST", base + "/session", .object(["capabilities": .object(["alwaysMatch": .object(["goog:chromeOptions": options])])]))
            guard let session = answer["value"]?["sessionId"]?.stringValue else {
                throw Failure(description: "chromedriver opened no session: \(answer)")
            }
            return Browser(driver: driver, base: base + "/session/" + session, session: session, profile: profile)
        } catch {
            kill(driver.processIdentifier, SIGKILL)
            throw error
        }
    }

    /// Ends the session and stops chromedriver.
    public func quit() async {
        _ = try? await Self.call("DELETE", base, nil)
        // SIGKILL: a test process running a server ignores SIGTERM (its signal handling), and
        // a child inherits that.
        kill(driver.processIdentifier, SIGKILL)
        driver.waitUntilExit()
        try? FileManager.default.removeItem(at: profile)
    }

    /// Loads `url` and waits for the page to load.
    public func open(_ url: String) async throws {
        _ = try await command("POST", "/url", .object(["url": .string(url)]))
    }

    /// The page's URL.
    public func url() async throws -> String {
        try await command("GET", "/url", nil, readOnly: true).stringValue ?? ""
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its value.
    @discardableResult
    public func run(_ script: String, _ args: [JSONValue] = []) async throws -> JSONValue {
        try await command("POST", "/execute/sync", .object(["script": .string(script), "args": .array(args)]), readOnly: true)
    }

    /// Clicks the first element matching `selector`, as a person would. A live page may
    /// replace the element between finding and clicking it; the click then goes to the one
    /// that replaced it, as a person's would.
    public func click(_ selector: String) async throws {
        for attempt in 1...5 {
            do {
                _ = try await command("POST", "/element/\(try await element(selector))/click", .object([:]))
                return
            } catch let failure as Failure where failure.description.contains("stale element") && attempt < 5 {
                continue
            }
        }
    }

    /// Types `text` into the first element matching `selector`.
    public func type(_ selector: String, _ text: String) async throws {
        _ = try await command("POST", "/element/\(try await element(selector))/value", .object(["text": .string(text)]))
    }

    /// The visible text of the first element matching `selector`, or `nil` if there is none.
    public func text(_ selector: String) async throws -> String? {
        try await run("const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", [.string(selector)]).stringValue
    }

    /// A PNG of the window as it shows the page.
    public func screenshot() async throws -> Data {
        guard let text = try await command("GET", "/screenshot", nil, readOnly: true).stringValue, let data = Data(base64Encoded: text) else {
            throw Failure(description: "chromedriver sent no screenshot")
        }
        return data
    }

    private func element(_ selector: String) async throws -> String {
        let found = try await command("POST", "/element", .object(["using": .string("css selector"), "value": .string(selector)]), readOnly: true)
        guard case .object(let fields) = found, let id = fields.values.first?.stringValue else {
            throw Failure(description: "no element matches \(selector)")
        }
        return id
    }

    /// One WebDriver command. chromedriver sometimes drops a connection unanswered while the
    /// page navigates (seen on a loaded machine); a `readOnly` command (a look, not an action)
    /// is then asked again.
    private func command(_ method: String, _ path: String, _ body: JSONValue?, readOnly: Bool = false) async throws -> JSONValue {
        var answer: JSONValue = .null
        for attempt in 1...5 {
            do {
                answer = try await Self.call(method, base + path, body)
                break
            } catch let failure as Failure where readOnly && failure.description.hasPrefix(Self.unanswered) && attempt < 5 {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        if let error = answer["value"]?["error"]?.stringValue {
            throw Failure(description: "\(method) \(path): \(error): \(answer["value"]?["message"]?.stringValue ?? "")")
        }
        return answer["value"] ?? .null
    }

    static let unanswered = "chromedriver closed the connection mid-answer"

    /// One request to chromedriver over a plain socket, on a thread of its own (URLSession on
    /// Linux refuses chromedriver's headers, which have no space after the colon).
    private static func call(_ method: String, _ url: String, _ body: JSONValue?) async throws -> JSONValue {
        let target = URL(string: url)!
        let payload = try body.map { try JSONEncoder().encode($0) } ?? Data()
        var head = "\(method) \(target.path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: \(payload.count)\r\n"
        if body != nil { head += "Content-Type: application/json\r\n" }
        let request = Data((head + "\r\n").utf8) + payload
        let response: Data = try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Result { try exchange(request, port: target.port ?? 80) })
            }.start()
        }
        return try JSONDecoder().decode(JSONValue.self, from: response)
    }

    /// Sends `request` to the loopback port and returns the answer's body (as long as its
    /// `Content-Length` says: chromedriver keeps the connection open).
    private static func exchange(_ request: Data, port: Int) throws -> Data {
        let fd = try Loopback.connect(port: port)
        defer { close(fd) }
        var sent = 0
        // A signal (a child process ending) may interrupt either call: it is then repeated.
        while sent < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, request.count - sent, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw POSIXError(.EPIPE) }
            sent += n
        }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        var bodyStart: Int?
        var length = 0
        while bodyStart.map({ response.count < $0 + length }) ?? true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw Failure(description: "\(unanswered) (\(response.count) bytes read, errno \(n < 0 ? errno : 0))")
            }
            response.append(contentsOf: buffer[0..<n])
            if bodyStart == nil, let end = response.range(of: Data("\r\n\r\n".utf8)) {
                bodyStart = end.upperBound
                for line in String(decoding: response[..<end.lowerBound], as: UTF8.self).split(separator: "\r\n") {
                    let parts = line.split(separator: ":", maxSplits: 1)
                    if parts.count == 2, parts[0].lowercased() == "content-length" {
                        length = Int(parts[1].trimmingCharacters(in: .whitespaces)) ?? 0
                    }
                }
            }
        }
        return response[bodyStart!..<(bodyStart! + length)]
    }

    /// A loopback port nothing listens on (bound, read, released).
    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw Failure(description: "no free loopback port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
