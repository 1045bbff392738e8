import Foundation
import Logging
import Postgres

/// Access to the test cluster that `make test` starts (its URL in `DATABASE_URL`).
///
/// Every test gets a schema of its own (`t_<random>`), dropped afterwards, so tests run in
/// parallel without seeing each other's rows; a pool handed to the test has `search_path` set
/// to that schema.
public enum TestDatabase {
    /// The cluster's URL, or `nil` when the tests run without one.
    public static var url: String? {
        let url = ProcessInfo.processInfo.environment["DATABASE_URL"]
        return (url?.isEmpty ?? true) ? nil : url
    }

    /// Whether database tests can run.
    public static var isConfigured: Bool { url != nil }

    /// `url` with `options=-c search_path=schema` appended: a child process's connection string
    /// for that schema.
    public static func connectionString(_ url: String, schema: String) -> String {
        url + (url.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
    }

    /// A configuration for the test cluster with short timeouts suitable for tests.
    public static func configuration(schema: String? = nil, applicationName: String = "imagejobs-test") -> PGConfiguration {
        var configuration = PGConfiguration(connectionString: url ?? "")
        configuration.applicationName = applicationName
        configuration.searchPath = schema
        configuration.statementTimeout = .seconds(20)
        configuration.lockTimeout = .seconds(5)
        configuration.connectTimeoutSeconds = 3
        return configuration
    }

    /// Runs `body` with a fresh schema, dropping it afterwards even when `body` throws.
    public static func withSchema<T: Sendable>(
        _ body: (TestSchema) async throws -> T
    ) async throws -> T {
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        let admin = PGPool(configuration: configuration(), options: .init(maxConnections: 1), logger: TestLog.quiet)
        try await admin.query("CREATE SCHEMA \(identifier: String(name))")
        let schema = TestSchema(name: String(name))
        do {
            let value = try await body(schema)
            await schema.pool.close()
            try await admin.query("DROP SCHEMA \(identifier: String(name)) CASCADE")
            await admin.close()
            return value
        } catch {
            await schema.pool.close()
            _ = try? await admin.query("DROP SCHEMA \(identifier: String(name)) CASCADE")
            await admin.close()
            throw error
        }
    }
}

/// A schema of one test, with a pool whose connections use it.
public struct TestSchema: Sendable {
    public let name: String
    public let configuration: PGConfiguration
    public let pool: PGPool

    init(name: String) {
        self.name = name
        self.configuration = TestDatabase.configuration(schema: name)
        self.pool = PGPool(configuration: configuration, options: .init(maxConnections: 4), logger: TestLog.quiet)
    }

    /// A connection string that selects this schema for a child process
    /// (`options=-c search_path=…` appended to the cluster URL).
    public var connectionString: String {
        TestDatabase.connectionString(TestDatabase.url ?? "", schema: name)
    }

    /// A new pool on this schema (for tests that need several).
    public func makePool(maxConnections: Int = 4, applicationName: String = "imagejobs-test") -> PGPool {
        var configuration = self.configuration
        configuration.applicationName = applicationName
        return PGPool(configuration: configuration, options: .init(maxConnections: maxConnections), logger: TestLog.quiet)
    }
}

/// Loggers for tests.
public enum TestLog {
    /// Discards everything, unless `IMAGEJOBS_TEST_LOG` names a level (then prints from that
    /// level up to stderr, to diagnose a failing test).
    public static let quiet: Logger = {
        guard let name = ProcessInfo.processInfo.environment["IMAGEJOBS_TEST_LOG"], let level = Logger.Level(rawValue: name) else {
            return Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        }
        var logger = Logger(label: "test", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = level
        return logger
    }()

    /// A logger that records every line, with its metadata, for assertions.
    public static func capturing(level: Logger.Level = .trace) -> (Logger, LogCapture) {
        let capture = LogCapture()
        var logger = Logger(label: "test", factory: { label in CapturingLogHandler(capture: capture) })
        logger.logLevel = level
        return (logger, capture)
    }
}

/// The lines a ``CapturingLogHandler`` recorded.
public final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) {
        lock.lock()
        lines.append(line)
        lock.unlock()
    }

    /// Every recorded line: level, message and metadata.
    public var all: [String] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let meta = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        capture.append("\(event.level) \(event.message) \(meta)")
    }
}
