import Foundation
import JobEngine
import Postgres
import TestSupport
import Testing

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
