import Foundation
import Postgres
import ServiceLifecycle
import TestSupport
import Testing
import Tracing

@testable import JobEngine

/// A handler whose behaviour the test picks per job through `params.mode`.
struct ScriptedHandler: JobHandler {
    let kind = "test.script"
    func run(_ job: ClaimedJob, context: JobContext) async throws -> JobResult {
        switch job.job.params["mode"]?.stringValue {
        case "sleep":
            try await Task.sleep(for: .milliseconds(job.job.params["ms"]?.intValue ?? 100))
        case "ignore-cancel":
            // Waits without honouring cancellation (and without blocking a pool thread).
            await ignoringCancellation(milliseconds: job.job.params["ms"]?.intValue ?? 3000)
        case "fail-twice":
            if job.job.attempt <= 2 { throw JobFailure.retryable("attempt \(job.job.attempt) failed") }
        default:
            break
        }
        return JobResult()
    }
}

/// A worker of two slots for `test.script` (the sleep handler) and a producer of its own whose
/// claimed attempts the test keeps, to drive the claim loop one cycle at a time.
func stepwiseWorker(_ schema: TestSchema) -> (Worker, Producer, Deliveries) {
    var configuration = WorkerConfiguration()
    configuration.concurrency = 2
    let worker = Worker(pool: schema.makePool(), handlers: [SleepHandler()], configuration: configuration, logger: TestLog.quiet)
    let deliveries = Deliveries()
    let producer = Producer(
        pool: worker.pool, configuration: configuration, kinds: ["test.script"], state: worker.state,
        completer: worker.executor.completer, logger: TestLog.quiet, tracer: NoOpTracer(), deliver: { deliveries.append($0) })
    return (worker, producer, deliveries)
}

@Suite("worker", .enabled(if: TestDatabase.isConfigured))
struct WorkerTests {
    @Test("a worker runs jobs to completion, retrying failures with backoff")
    func runsAndRetries() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let ok = try await queue.submit(Factory.spec(params: ["mode": .string("sleep"), "ms": .number(50)])).job.id
            let flaky = try await queue.submit(Factory.spec(params: ["mode": .string("fail-twice")])).job.id
            let worker = Worker(pool: schema.makePool(), handlers: [ScriptedHandler()], configuration: fastConfiguration(), logger: TestLog.quiet)
            let task = Task { try await worker.run() }
            let done = try await eventually {
                try await schema.pool.int("SELECT count(*) FROM jobs WHERE status = 'completed'") == 2
            }
            task.cancel()
            _ = await task.result
            #expect(done)
            #expect(try await queue.job(ok).status == .completed)
            let job = try await queue.job(flaky)
            #expect(job.retryCount == 2)
            #expect(job.errors.count == 2)
            #expect(worker.counters.retried == 2, "\(job.errors.map(\.message))")
        }
    }

    @Test("a job past its timeout ends in error and a handler ignoring cancellation still frees its slot")
    func timeoutFreesSlot() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let stuck = try await queue.submit(
                Factory.spec(params: ["mode": .string("ignore-cancel"), "ms": .number(10_000)], timeout: .seconds(1))).job.id
            let next = try await queue.submit(Factory.spec(params: ["mode": .string("sleep"), "ms": .number(10)])).job.id
            let worker = Worker(pool: schema.makePool(), handlers: [ScriptedHandler()], configuration: fastConfiguration(concurrency: 1), logger: TestLog.quiet)
            let task = Task { try await worker.run() }
            // With one slot, the second job can only run once the first one's slot is freed.
            let done = try await eventually(timeout: .seconds(9)) {
                try await queue.job(next).status == .completed
            }
            #expect(done)
            let job = try await queue.job(stuck)
            #expect(job.status == .error)
            #expect(job.errorMessage == "timed out after 1 s")
            // Freed at the deadline, while the handler was still running (it ignores
            // cancellation for 10 s).
            let finished = try #require(try await queue.job(next).finishedAt)
            #expect(finished.timeIntervalSince(job.startedAt!) < 9)
            task.cancel()
            _ = await task.result
        }
    }

    @Test("graceful shutdown hands running jobs back without charging a retry")
    func gracefulShutdown() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let id = try await queue.submit(Factory.spec(params: ["mode": .string("sleep"), "ms": .number(30_000)])).job.id
            let worker = Worker(pool: schema.makePool(), handlers: [ScriptedHandler()], configuration: fastConfiguration(), logger: TestLog.quiet)
            let group = ServiceGroup(services: [worker], logger: TestLog.quiet)
            let task = Task { try await group.run() }
            #expect(try await eventually { try await queue.job(id).status == .running })
            await group.triggerGracefulShutdown()
            try await task.value
            let job = try await queue.job(id)
            #expect(job.status == .pending)
            #expect(job.retryCount == 0)
            #expect(worker.counters.released == 1)
            #expect(try await schema.pool.int("SELECT count(*) FROM workers WHERE stopped_at IS NOT NULL") == 1)
        }
    }

    @Test("cancelling a running job stops it on its worker")
    func cancelRunning() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let id = try await queue.submit(Factory.spec(params: ["mode": .string("sleep"), "ms": .number(30_000)])).job.id
            let worker = Worker(pool: schema.makePool(), handlers: [ScriptedHandler()], configuration: fastConfiguration(), logger: TestLog.quiet)
            let task = Task { try await worker.run() }
            #expect(try await eventually { try await queue.job(id).status == .running })
            #expect(try await queue.cancel(id) == .running)
            #expect(try await eventually(timeout: .seconds(5)) { worker.counters.leaseLost == 1 })
            #expect(try await queue.job(id).status == .cancelled)
            task.cancel()
            _ = await task.result
        }
    }
}

/// Waits `milliseconds` in a way task cancellation cannot cut short.
func ignoringCancellation(milliseconds: Int) async {
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        let t = Thread {
            usleep(useconds_t(milliseconds * 1000))
            c.resume()
        }
        t.start()
    }
}

@Suite("worker state")
struct WorkerStateTests {
    @Test("a lease-lost answer about an earlier attempt leaves the job's current attempt running")
    func interruptNamesTheAttempt() async {
        let state = WorkerState(metrics: WorkerMetrics(kinds: ["test.script"]), concurrency: 2)
        let id = UUID()
        let retry = Execution()
        // The worker already runs attempt 2 (its own retry of the job) when a heartbeat sent
        // for attempt 1 comes back without it.
        state.add(id, attempt: 2, execution: retry, deadline: .now + .seconds(60))
        state.interrupt(id, attempt: 1, reason: .leaseLost)
        retry.finish(.timedOut)
        guard case .timedOut = await retry.outcome() else {
            Issue.record("attempt 2 was interrupted by an answer about attempt 1")
            return
        }
        let current = Execution()
        state.add(id, attempt: 3, execution: current, deadline: .now + .seconds(60))
        state.interrupt(id, attempt: 3, reason: .leaseLost)
        current.finish(.timedOut)
        guard case .interrupted(.leaseLost) = await current.outcome() else {
            Issue.record("the current attempt was not interrupted")
            return
        }
    }
}

/// Claimed attempts a test's producer hands over, instead of starting them.
final class Deliveries: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [ClaimedJob] = []
    func append(_ claimed: ClaimedJob) { lock.lock(); items.append(claimed); lock.unlock() }
    var all: [ClaimedJob] { lock.lock(); defer { lock.unlock() }; return items }
}

@Suite("the worker's services, one step at a time", .enabled(if: TestDatabase.isConfigured))
struct WorkerServiceTests {
    @Test("the producer's cycle claims up to the free slots and hands them over; the executor runs one attempt to its recorded end")
    func producerAndExecutorRunOnce() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let ids = try await (0..<3).asyncMap { _ in try await queue.submit(Factory.spec(params: ["sleep_ms": 1])).job.id }
            let (worker, producer, deliveries) = stepwiseWorker(schema)

            let first = try await producer.runOnce()
            #expect(first.claimed == 2 && first.limit == 2 && first.claimedAll)
            #expect(Set(deliveries.all.map(\.job.id)).isSubset(of: ids) && deliveries.all.allSatisfy { $0.job.status == .running })

            // The executor takes one into a slot and runs it to its end, completion written.
            let outcome = await worker.executor.runOnce(deliveries.all[0])
            #expect(outcome?.name == "completed")
            #expect(try await queue.job(deliveries.all[0].job.id).status == .completed)
            #expect(worker.state.runningCount == 0 && worker.counters.completed == 1)

            // Nothing runs in this worker's slots (the test kept the deliveries), so the next
            // cycle may claim two again and finds the one left.
            let second = try await producer.runOnce()
            #expect(second.claimed == 1 && second.limit == 2 && !second.claimedAll)
            let third = try await producer.runOnce()
            #expect(third.claimed == 0)
        }
    }
}
