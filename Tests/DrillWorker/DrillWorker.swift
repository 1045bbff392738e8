// `imagejobs-drill-worker`: the production worker (`imagejobs worker`'s flags and handlers)
// plus the drills' own kind, `test.script`, whose handler can crash its process, hang, fail or
// time out on request. The fault drills and the CLI tests run it; it is not shipped.
import ArgumentParser
import Foundation
import ImageJobsCLI
import JobEngine
import Postgres

#if canImport(Glibc)
import Glibc
#endif

@main
struct DrillWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imagejobs-drill-worker", abstract: "imagejobs worker, plus the drills' test.script handler.")
    @OptionGroup var worker: WorkerOptions
    @Option(help: "Append a line per start, end, failure and crash of a test.script job to this file.") var executionLog: String?
    @Flag(help: "Also run the benchmark's no-op jobs (bench.noop), for `imagejobs bench`'s multi-process tests.") var benchNoop = false

    func run() async throws {
        let drills: [any JobHandler] = [DiagnosticHandler(executionLog: executionLog)] + (benchNoop ? [NoopHandler()] : [])
        try await worker.run(extraHandlers: drills)
    }
}

/// A handler for tests and fault drills, driven by the job's parameters:
/// `sleep_ms` (cooperative), `rate_limited_attempts` (answer the first N attempts like an HTTP 429
/// with `retry_after_ms`), `fail_attempts` (fail the first N attempts), `permanent` (fail
/// for good), `crash_attempts` (exit the process on the first N attempts, `-1` on all),
/// `hang_ms` (ignore cancellation; on the first `hang_attempts` attempts, or all), `db_sleep_ms` with `db_timeout_ms` and `db_attempts` (run a
/// statement past its statement timeout on the first attempts). Appends start and end lines
/// to an execution log.
struct DiagnosticHandler: JobHandler {
    let kind = "test.script"
    let executionLog: String?

    func run(_ claimed: ClaimedJob, context: JobContext) async throws -> JobResult {
        let job = claimed.job
        let p = job.params
        log("start", job)
        let crash = p["crash_attempts"]?.intValue ?? 0
        if crash == -1 || job.attempt <= crash {
            log("crash", job)
            exit(3)
        }
        if let hang = p["hang_ms"]?.intValue, job.attempt <= (p["hang_attempts"]?.intValue ?? Int.max) {
            // Ignores cancellation on purpose (waiting on a thread of its own, not the pool).
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                Thread {
                    usleep(useconds_t(hang * 1000))
                    c.resume()
                }.start()
            }
        }
        if let sleep = p["sleep_ms"]?.intValue {
            try await Task.sleep(for: .milliseconds(sleep))
        }
        if let dbSleep = p["db_sleep_ms"]?.intValue, job.attempt <= (p["db_attempts"]?.intValue ?? 1) {
            // A statement that runs into its statement timeout inside the handler: the error
            // (SQLSTATE 57014) fails the attempt like any other, and the connection stays usable.
            let timeout = p["db_timeout_ms"]?.intValue ?? 100
            try await context.pool.withTransaction { conn in
                try await conn.setLocalStatementTimeout(.milliseconds(timeout))
                try await conn.query("SELECT pg_sleep(\(Double(dbSleep) / 1000))")
            }
        }
        if p["permanent"]?.boolValue == true {
            log("fail", job)
            throw JobFailure.permanent("permanent failure requested")
        }
        if job.attempt <= (p["rate_limited_attempts"]?.intValue ?? 0) {
            log("deferred", job)
            throw JobFailure.rateLimited("429 Too Many Requests", retryAfter: .milliseconds(p["retry_after_ms"]?.intValue ?? 500))
        }
        if job.attempt <= (p["fail_attempts"]?.intValue ?? 0) {
            log("fail", job)
            throw JobFailure.retryable("failure requested on attempt \(job.attempt)")
        }
        log("end", job)
        return JobResult()
    }

    private func log(_ event: String, _ job: Job) {
        guard let executionLog else { return }
        let line = "\(event) \(job.id.lowercasedString) \(job.attempt) \(getpid()) \(Date().timeIntervalSince1970)\n"
        let fd = open(executionLog, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else { return }
        _ = line.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }
}
