import Foundation
import JobEngine
import Postgres

extension TestDatabase {
    /// A fresh schema with every migration applied, and a queue client on it.
    public static func withMigratedSchema<T: Sendable>(_ body: (TestSchema, JobQueue) async throws -> T) async throws -> T {
        try await withSchema { schema in
            try await Migrator(pool: schema.pool, logger: TestLog.quiet).up()
            let queue = JobQueue(pool: schema.pool, logger: TestLog.quiet)
            return try await body(schema, queue)
        }
    }
}

extension PGPool {
    /// The single integer a statement returns (test convenience).
    public func int(_ query: PGQuery) async throws -> Int {
        try await scalar(query)
    }
}

/// Job specs for tests.
public enum Factory {
    public static func spec(
        conversation: UUID = UUID(), kind: String = "test.script", priority: JobPriority = .normal, params: [String: JSONValue] = [:],
        timeout: Duration = .seconds(300), maxRetries: Int = 3, key: String? = nil
    ) -> JobSpec {
        JobSpec(kind: kind, params: params, groupID: conversation, priority: priority, timeout: timeout,
                maxRetries: maxRetries, idempotencyKey: key)
    }
}

/// Polls `condition` until it holds or `timeout` passes (for waits on other processes).
public func eventually(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

extension Sequence where Element: Sendable {
    /// `map` with an async transform, one element at a time, in order.
    public func asyncMap<T: Sendable>(_ transform: (Element) async throws -> T) async throws -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}

/// A worker's settings for tests: every interval short, so tests see retries, rescues and
/// shutdowns in well under a second.
public func fastConfiguration(concurrency: Int = 2) -> WorkerConfiguration {
    var c = WorkerConfiguration()
    c.concurrency = concurrency
    c.pollInterval = .milliseconds(100)
    c.heartbeatInterval = .milliseconds(300)
    c.lease = .seconds(3)
    c.sweepInterval = .milliseconds(300)
    c.stuckGrace = .seconds(1)
    c.shutdownGrace = .milliseconds(300)
    c.backoff = RetryBackoff(base: .milliseconds(100))
    return c
}
