import Foundation
import Postgres
import TestSupport
import Testing

@testable import JobEngine

/// On its first attempt reports 1…total as fast as it can (and one report without a total,
/// which is ignored), holds the attempt, then fails; on the second it reports -3 of 4 (clamped
/// to 0 of 4), holds, and completes.
struct ReportingHandler: JobHandler {
    let kind = "test.progress"
    func run(_ job: ClaimedJob, context: JobContext) async throws -> JobResult {
        let total = job.job.params["total"]?.intValue ?? 100
        let hold = Duration.milliseconds(job.job.params["hold_ms"]?.intValue ?? 3000)
        if job.job.attempt == 1 {
            for step in 1...total { context.reportProgress(step: step, of: total) }
            context.reportProgress(step: 5, of: 0)
            try await Task.sleep(for: hold)
            throw JobFailure.retryable("first attempt fails after reporting")
        }
        context.reportProgress(step: -3, of: 4)
        try await Task.sleep(for: hold)
        return JobResult()
    }
}

@Suite("progress", .enabled(if: TestDatabase.isConfigured))
struct ProgressTests {
    @Test("a handler's latest progress reaches the job within a flush; a new attempt starts without the old one's")
    func progressIsWrittenAndReset() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let spec = Factory.spec(kind: "test.progress", params: ["total": .number(500), "hold_ms": .number(2500)])
            let id = try await queue.submit(spec).job.id
            var configuration = fastConfiguration()
            configuration.backoff = RetryBackoff(base: .milliseconds(100))
            let worker = Worker(pool: schema.makePool(), handlers: [ReportingHandler()], configuration: configuration, logger: TestLog.quiet)
            let task = Task { try await worker.run() }
            defer { task.cancel() }

            let first = try await eventually(timeout: .seconds(10)) { try await queue.job(id).progress == JobProgress(step: 500, total: 500) }
            #expect(first, "the last of 500 reports is written")
            #expect(try await queue.job(id).attempt == 1)
            let counted = try await eventually(timeout: .seconds(5)) { worker.counters.progressWrites >= 1 }
            #expect(counted && worker.counters.progressWrites <= 2, "500 reports cost a write or two: \(worker.counters.progressWrites)")

            let second = try await eventually(timeout: .seconds(15)) {
                let job = try await queue.job(id)
                return job.attempt == 2 && job.status == .running
            }
            #expect(second)
            // The claim cleared the first attempt's progress in the same statement: the second
            // attempt shows none, or its own.
            let cleared = try await queue.job(id)
            #expect(cleared.progress == nil || cleared.progress == JobProgress(step: 0, total: 4), "\(String(describing: cleared.progress))")
            let own = try await eventually(timeout: .seconds(10)) { try await queue.job(id).progress == JobProgress(step: 0, total: 4) }
            #expect(own, "the retry's report, clamped to 0 of 4")
        }
    }

    @Test("the worker keeps only each attempt's latest report between flushes, and none for an attempt it does not run")
    func reportsCoalesce() {
        let state = WorkerState(metrics: WorkerMetrics(kinds: ["test.progress"]), concurrency: 2)
        let id = UUID()
        state.add(id, attempt: 3, execution: Execution(), deadline: .now + .seconds(60))
        for step in 1...1_000 { state.reportProgress(id, attempt: 3, step: step, total: 1_000) }
        state.reportProgress(id, attempt: 2, step: 1, total: 1_000)  // an earlier attempt's late report
        state.reportProgress(UUID(), attempt: 1, step: 1, total: 1)  // not running here
        let taken = state.takeProgress()
        #expect(taken.count == 1)
        #expect(taken.first?.id == id && taken.first?.attempt == 3 && taken.first?.step == 1_000)
        #expect(state.takeProgress().isEmpty, "nothing new to write until the handler reports again")
        state.reportProgress(id, attempt: 3, step: 7, total: 1_000)
        state.remove(id)
        #expect(state.takeProgress().isEmpty, "a finished attempt's unwritten progress is dropped")
    }
}
