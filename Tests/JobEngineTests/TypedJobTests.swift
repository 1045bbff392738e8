import Foundation
import JobEngine
import Postgres
import TestSupport
import Testing
import InMemoryTracing
import Tracing

struct WelcomeMail: JobArguments, Equatable {
    static let kind = "mail.welcome"
    var userID: Int
    var locale: String
    var sendAfter: Date
    var tags: [String]
}

/// Encodes to a bare string, not an object.
struct BareKind: JobArguments {
    static let kind = "bare.value"
    var value: String
    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value)
    }
}

/// What a handler saw, for the test to read.
actor Received<T: Sendable> {
    var values: [T] = []
    func append(_ value: T) { values.append(value) }
}

@Suite("typed jobs: arguments, handlers")
struct TypedJobArgumentTests {
    @Test("arguments round-trip through params, dates to the millisecond; a value that is not an object is refused")
    func roundTrip() throws {
        let mail = WelcomeMail(userID: 7, locale: "de", sendAfter: Date(timeIntervalSince1970: 1_790_000_000.123), tags: ["new"])
        let params = try JobArgumentsCoding.params(mail)
        #expect(params["userID"] == 7 && params["sendAfter"] == "2026-09-21T14:13:20.123Z")
        #expect(try JobArgumentsCoding.arguments(WelcomeMail.self, from: params) == mail)
        let spec = try JobSpec(mail, groupID: UUID(), priority: .high)
        #expect(spec.kind == "mail.welcome" && spec.priority == .high && spec.params == params)
        let refused = #expect(throws: JobQueueError.self) { try JobSpec(BareKind(value: "x"), groupID: UUID()) }
        #expect(refused?.field == "params" && refused?.description.contains("must encode to a JSON object") == true)
    }
}

@Suite("typed jobs through a worker", .enabled(if: TestDatabase.isConfigured))
struct TypedJobWorkerTests {
    @Test("a typed handler gets the arguments submitted; params that do not decode fail for good, naming the field")
    func typedHandler() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let group = UUID()
            let mail = WelcomeMail(userID: 42, locale: "fr", sendAfter: Date(timeIntervalSince1970: 1_800_000_000.5), tags: ["a", "b"])
            let good = try await queue.submit(try JobSpec(mail, groupID: group)).job.id
            let bad = try await queue.submit(JobSpec(kind: WelcomeMail.kind, params: ["userID": "forty-two"], groupID: group, maxRetries: 3)).job.id
            let received = Received<WelcomeMail>()
            let handler = ClosureJobHandler(WelcomeMail.self) { mail, _, _ in
                await received.append(mail)
                return JobResult()
            }
            var configuration = WorkerConfiguration()
            configuration.pollInterval = .milliseconds(100)
            let worker = Worker(pool: schema.makePool(), handlers: [handler], configuration: configuration, logger: TestLog.quiet)
            let task = Task { try await worker.run() }
            let done = try await eventually {
                let goodStatus = try await queue.job(good).status
                let badStatus = try await queue.job(bad).status
                return goodStatus == .completed && badStatus == .error
            }
            task.cancel()
            _ = await task.result
            #expect(done)
            #expect(await received.values == [mail])
            let failed = try await queue.job(bad)
            #expect(failed.retryCount == 0)
            #expect(failed.errorMessage == "the params of this mail.welcome job do not decode: userID is not Int", "\(String(describing: failed.errorMessage))")
        }
    }
}

@Suite("tracing: a job's run joins the trace that submitted it", .enabled(if: TestDatabase.isConfigured))
struct TracingTests {
    @Test("job.enqueue is a child of the request's span; job.run is a child of job.enqueue in the same trace; claims are spanned")
    func runJoinsTheSubmittersTrace() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            let tracer = InMemoryTracer()
            let queue = JobQueue(pool: schema.pool, logger: TestLog.quiet, tracer: tracer)
            let mail = WelcomeMail(userID: 1, locale: "en", sendAfter: Date(), tags: [])
            let id = try await tracer.withSpan("POST /signup", ofKind: .server) { _ in
                try await queue.submit(try JobSpec(mail, groupID: UUID())).job.id
            }
            let untraced = try await JobQueue(pool: schema.pool, logger: TestLog.quiet).submit(try JobSpec(mail, groupID: UUID())).job.id
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE trace_context IS NULL AND id = \(untraced)") == 1)

            var configuration = WorkerConfiguration()
            configuration.pollInterval = .milliseconds(100)
            let handler = ClosureJobHandler(WelcomeMail.self) { _, _, _ in
                // The handler's own spans nest under the run.
                tracer.withSpan("send mail") { _ in }
                return JobResult()
            }
            let worker = Worker(pool: schema.makePool(), handlers: [handler], configuration: configuration, logger: TestLog.quiet, tracer: tracer)
            let task = Task { try await worker.run() }
            let done = try await eventually {
                let traced = try await queue.job(id).status
                let other = try await queue.job(untraced).status
                return traced == .completed && other == .completed
            }
            task.cancel()
            _ = await task.result
            #expect(done)

            let spans = tracer.finishedSpans
            let request = try #require(spans.first { $0.operationName == "POST /signup" })
            let enqueue = try #require(spans.first { $0.operationName == "job.enqueue" && $0.traceID == request.traceID })
            #expect(enqueue.parentSpanID == request.spanID && enqueue.kind == .producer)
            let runs = spans.filter { $0.operationName == "job.run" && $0.attributes["job.id"]?.toSpanAttribute() == .string(id.lowercasedString) }
            let run = try #require(runs.first)
            #expect(runs.count == 1)
            #expect(run.traceID == request.traceID && run.parentSpanID == enqueue.spanID && run.kind == .consumer)
            // Both jobs ran; the traced one's handler span is the run's child, in the request's trace.
            #expect(spans.filter { $0.operationName == "send mail" }.count == 2)
            let send = spans.filter { $0.operationName == "send mail" && $0.traceID == request.traceID }
            #expect(send.count == 1 && send.first?.parentSpanID == run.spanID)
            #expect(spans.contains { $0.operationName == "job.claim" })
        }
    }
}
