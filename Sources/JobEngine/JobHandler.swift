import Foundation
import Logging
import Postgres

/// A job as its handler receives it.
public struct ClaimedJob: Sendable {
    public let job: Job
    /// Seconds left before the deadline, measured by the database at claim time.
    public let remainingSeconds: Double
    /// The submitter's trace context, as stored (`jobs.trace_context`).
    let traceContext: String?
}

/// What a handler's run has for the handler.
public struct JobContext: Sendable {
    public let logger: Logger
    /// The worker's pool, for handlers that read or write the database themselves.
    public let pool: PGPool
    public let workerID: String
    let progressSink: @Sendable (_ step: Int, _ total: Int) -> Void

    /// Reports how far the attempt is: `step` of `total` (rows drawn, sampling steps). Call it
    /// as often as you like: the worker keeps the latest value and writes its attempts'
    /// progress at most once a second, in one statement, so a job costs at most one write a
    /// second. A `total` below 1 is ignored; `step` is clamped to `0...total`.
    public func reportProgress(step: Int, of total: Int) {
        guard total >= 1 else { return }
        progressSink(min(max(step, 0), total), total)
    }
}

/// What a successful run returns.
public struct JobResult: Sendable {
    /// Work to do in the completion's own transaction (store a result row, say): it commits
    /// if and only if this attempt's completion does, so a stale attempt stores nothing.
    public var store: (@Sendable (PGConnection) async throws -> Void)?

    public init(store: (@Sendable (PGConnection) async throws -> Void)? = nil) {
        self.store = store
    }
}

/// The failure a handler throws to choose what happens next; any other error is a retryable
/// failure whose description becomes the attempt's error message.
public struct JobFailure: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// A permanent failure (input the backend rejects) goes straight to `error`; no retry.
    public var permanent: Bool
    /// The backend is over its rate (an HTTP 429 with `Retry-After`, say): the job waits this
    /// long and runs again without being charged a retry; under its kind's rate limit, the
    /// admitter decides when.
    public var retryAfter: Duration?

    public init(message: String, permanent: Bool, retryAfter: Duration? = nil) {
        self.message = message
        self.permanent = permanent
        self.retryAfter = retryAfter
    }

    public static func retryable(_ message: String) -> JobFailure { JobFailure(message: message, permanent: false) }
    public static func permanent(_ message: String) -> JobFailure { JobFailure(message: message, permanent: true) }
    /// The backend said "too many requests; come back after `after`".
    public static func rateLimited(_ message: String, retryAfter after: Duration) -> JobFailure {
        JobFailure(message: message, permanent: false, retryAfter: max(after, .zero))
    }

    public var description: String { message }
}

/// Runs jobs of one kind.
public protocol JobHandler: Sendable {
    /// The kind this handler runs (`mail.send`, say).
    var kind: String { get }
    /// Runs one attempt. Honour task cancellation: the worker cancels the task at the job's
    /// deadline, when the job is cancelled and at shutdown.
    func run(_ job: ClaimedJob, context: JobContext) async throws -> JobResult
}

/// Runs blocking or CPU-heavy work (rendering, a child process) on a thread of its own,
/// so handlers never block Swift's cooperative pool.
public func runBlocking<T: Sendable>(name: String, _ body: @escaping @Sendable () -> T) async -> T {
    await runOnNewThread(name: name, body)
}
