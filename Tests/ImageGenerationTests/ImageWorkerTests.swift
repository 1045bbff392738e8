import Foundation
import ImageGeneration
import JobQueue
import Postgres
import TestSupport
import Testing

@Suite("image jobs through a worker", .enabled(if: TestDatabase.isConfigured))
struct ImageWorkerTests {
    func config() -> WorkerConfiguration {
        var c = WorkerConfiguration()
        c.pollInterval = .milliseconds(100)
        c.heartbeatInterval = .milliseconds(300)
        c.lease = .seconds(3)
        c.sweepInterval = .milliseconds(300)
        c.backoff = RetryBackoff(base: .milliseconds(100))
        return c
    }

    func image(_ prompt: String, width: Int = 64, height: Int = 64) -> JobSpec {
        JobSpec(params: ImageJobParameters(prompt: prompt, width: width, height: height).jsonObject, conversationID: UUID())
    }

    @Test("HTTP 429 then success: the job is retried and its PNG stored with its metadata")
    func retriedThenStored() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let png = try PNG.encodeRGB(width: 64, height: 64, pixels: [UInt8](repeating: 90, count: 64 * 64 * 3))
            let server = try TestHTTPServer([.json(429, "{}"), .json(200, #"{"images":["\#(Data(png).base64EncodedString())"]}"#)])
            defer { server.stop() }
            let id = try await queue.submit(image("a fox")).job.id
            let worker = Worker(pool: schema.makePool(), handlers: [ImageJobHandler(generator: Automatic1111Generator(baseURL: server.url))],
                                configuration: config(), logger: TestLog.quiet)
            let task = Task { try await worker.run() }
            let done = try await eventually { try await queue.job(id).status == .completed }
            task.cancel()
            _ = await task.result
            #expect(done)
            let job = try await queue.job(id)
            #expect(job.retryCount == 1, "\(job.errors.map(\.message))")
            #expect(job.errors.first?.message == "automatic1111: HTTP 429")
            let info = try #require(try await JobResults.info(id, pool: schema.pool))
            #expect(info.width == 64 && info.height == 64 && info.backend == "automatic1111")
            #expect(info.byteSize == png.count)
            #expect(info.sha256 == SHA256.hex(png))
            #expect(try await JobResults.bytes(id, pool: schema.pool) == png)
        }
    }

    @Test("HTTP 400 is a permanent error; a slow server runs into the job's timeout")
    func permanentAndSlow() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let rejecting = try TestHTTPServer([.json(400, #"{"error":{"message":"rejected"}}"#)])
            defer { rejecting.stop() }
            let a = try await queue.submit(image("x")).job.id
            let w1 = Worker(pool: schema.makePool(), handlers: [ImageJobHandler(generator: OpenAIGenerator(baseURL: rejecting.url, apiKey: "k"))],
                            configuration: config(), logger: TestLog.quiet)
            let t1 = Task { try await w1.run() }
            #expect(try await eventually { try await queue.job(a).status == .error })
            t1.cancel()
            _ = await t1.result
            #expect(try await queue.job(a).retryCount == 0)
            #expect(try await queue.job(a).errorMessage == "openai: HTTP 400: rejected")

            let slow = try TestHTTPServer([.json(200, "{}", delay: 8)])
            defer { slow.stop() }
            var spec = image("y")
            spec.timeout = .seconds(1)
            let b = try await queue.submit(spec).job.id
            let w2 = Worker(pool: schema.makePool(), handlers: [ImageJobHandler(generator: Automatic1111Generator(baseURL: slow.url))],
                            configuration: config(), logger: TestLog.quiet)
            let t2 = Task { try await w2.run() }
            #expect(try await eventually { try await queue.job(b).status == .error })
            t2.cancel()
            _ = await t2.result
            let slowJob = try await queue.job(b)
            #expect(slowJob.errorMessage == "timed out after 1 s", "\(slowJob.errors)")
        }
    }
}
