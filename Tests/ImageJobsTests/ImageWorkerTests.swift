import Foundation
import ImageJobs
import JobEngine
import Postgres
import TestSupport
import Testing

@Suite("image jobs through a worker", .enabled(if: TestDatabase.isConfigured))
struct ImageWorkerTests {
    func image(_ prompt: String, width: Int = 64, height: Int = 64) -> JobSpec {
        JobSpec(kind: ImageJob.kind, params: ImageJobParameters(prompt: prompt, width: width, height: height).jsonObject, groupID: UUID())
    }

    @Test("HTTP 429 then success: the job is retried and its PNG stored with its metadata")
    func retriedThenStored() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let png = try PNG.encodeRGB(width: 64, height: 64, pixels: [UInt8](repeating: 90, count: 64 * 64 * 3))
            let server = try TestHTTPServer([.json(429, "{}"), .json(200, #"{"images":["\#(Data(png).base64EncodedString())"]}"#)])
            defer { server.stop() }
            let id = try await queue.submit(image("a fox")).job.id
            let worker = Worker(pool: schema.makePool(), handlers: [ImageJobHandler(generator: Automatic1111Generator(baseURL: server.url))],
                                configuration: fastConfiguration(), logger: TestLog.quiet)
            let task = Task { try await worker.run() }
            let done = try await eventually { try await queue.job(id).status == .completed }
            task.cancel()
            _ = await task.result
            #expect(done)
            let job = try await queue.job(id)
            #expect(job.retryCount == 1, "\(job.errors.map(\.message))")
            #expect(job.errors.first?.message == "automatic1111: HTTP 429")
            let info = try #require(try await JobResults.info(id, pool: schema.pool))
            #expect(info.metadata["width"] == 64 && info.metadata["height"] == 64 && info.backend == "automatic1111")
            #expect(info.byteSize == png.count)
            #expect(info.sha256 == SHA256.hexDigest(png))
            #expect(try await JobResults.bytes(id, pool: schema.pool) == png)
        }
    }

    @Test("HTTP 400 is a permanent error; a slow server runs into the job's timeout")
    func permanentAndSlow() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let rejecting = try TestHTTPServer([.json(400, #"{"error":{"message":"rejected"}}"#)])
            defer { rejecting.stop() }
            let a = try await queue.submit(image("x")).job.id
            // A long lease: on a loaded machine a late heartbeat would otherwise have the sweep
            // rescue the attempt, which is right, but not what this test is about.
            var configuration = fastConfiguration()
            configuration.lease = .seconds(30)
            let w1 = Worker(pool: schema.makePool(), handlers: [ImageJobHandler(generator: OpenAIGenerator(baseURL: rejecting.url, apiKey: "k"))],
                            configuration: configuration, logger: TestLog.quiet)
            let t1 = Task { try await w1.run() }
            #expect(try await eventually { try await queue.job(a).status == .error })
            t1.cancel()
            _ = await t1.result
            let rejected = try await queue.job(a)
            #expect(rejected.retryCount == 0, "\(rejected.errors)")
            #expect(rejected.errorMessage == "openai: HTTP 400: rejected", "\(rejected.errors)")

            let slow = try TestHTTPServer([.json(200, "{}", delay: 8)])
            defer { slow.stop() }
            var spec = image("y")
            spec.timeout = .seconds(1)
            let b = try await queue.submit(spec).job.id
            let w2 = Worker(pool: schema.makePool(), handlers: [ImageJobHandler(generator: Automatic1111Generator(baseURL: slow.url))],
                            configuration: configuration, logger: TestLog.quiet)
            let t2 = Task { try await w2.run() }
            #expect(try await eventually { try await queue.job(b).status == .error })
            t2.cancel()
            _ = await t2.result
            let slowJob = try await queue.job(b)
            #expect(slowJob.errorMessage == "timed out after 1 s", "\(slowJob.errors)")
        }
    }

    /// A generator as real ones are written: it reads its input to EOF, records the descriptors
    /// it holds, then waits until `expected` of its siblings have got that far before it answers
    /// with a PNG. A child whose stdin another child holds open never sees EOF and never arrives.
    struct RendezvousGenerator {
        let dir: URL
        let expected: Int

        init(expected: Int) throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("rendezvous-\(UUID().uuidString)")
            self.expected = expected
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let png = try PNG.encodeRGB(width: 8, height: 8, pixels: [UInt8](repeating: 7, count: 8 * 8 * 3))
            try Data(png).write(to: dir.appendingPathComponent("out.png"))
            try """
            import json, os, sys, time
            job = json.loads(sys.stdin.buffer.read())
            here = sys.argv[1]
            listing = os.path.realpath("/proc/self/fd")
            fds = {}
            for name in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink(f"/proc/self/fd/{name}")
                except OSError:
                    continue  # the listing's own descriptor, closed again
                if target != listing:
                    fds[name] = target
            with open(os.path.join(here, job["job_id"] + ".fds"), "w") as f:
                json.dump(fds, f)
            open(os.path.join(here, job["job_id"] + ".arrived"), "w").close()
            for _ in range(300):
                if sum(n.endswith(".arrived") for n in os.listdir(here)) >= int(sys.argv[2]):
                    break
                time.sleep(0.05)
            else:
                sys.exit("not every sibling arrived")
            sys.stdout.buffer.write(open(os.path.join(here, "out.png"), "rb").read())
            """.write(to: dir.appendingPathComponent("gen.py"), atomically: true, encoding: .utf8)
        }

        var generator: CommandGenerator {
            get throws { try CommandGenerator(commandLine: "python3 \(dir.path)/gen.py \(dir.path) \(expected)") }
        }

        /// The descriptors a job's child held: number → what it pointed at.
        func descriptors(of id: UUID) throws -> [String: String] {
            let data = try Data(contentsOf: dir.appendingPathComponent("\(id.uuidString.lowercased()).fds"))
            return try JSONDecoder().decode([String: String].self, from: data)
        }

        func remove() { try? FileManager.default.removeItem(at: dir) }
    }

    /// Runs `count` command jobs on one worker with as many slots, until all have finished.
    func runCommandJobs(_ count: Int, generator: RendezvousGenerator, queue: JobQueue, schema: TestSchema) async throws -> [Job] {
        var spec = image("concurrent")
        spec.timeout = .seconds(30)
        let ids = try await (0..<count).asyncMap { _ in try await queue.submit(spec).job.id }
        var configuration = fastConfiguration()
        configuration.concurrency = count
        let worker = Worker(pool: schema.makePool(), handlers: [ImageJobHandler(generator: try generator.generator)],
                            configuration: configuration, logger: TestLog.quiet)
        let task = Task { try await worker.run() }
        _ = try await eventually(timeout: .seconds(60)) {
            try await ids.asyncMap { try await queue.job($0).status }.allSatisfy { $0 != .pending && $0 != .running }
        }
        task.cancel()
        _ = await task.result
        return try await ids.asyncMap { try await queue.job($0) }
    }

    @Test("eight command jobs that read stdin to EOF run at once on eight slots and all complete")
    func commandJobsRunConcurrently() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let generator = try RendezvousGenerator(expected: 8)
            defer { generator.remove() }
            let jobs = try await runCommandJobs(8, generator: generator, queue: queue, schema: schema)
            for job in jobs {
                #expect(job.status == .completed && job.retryCount == 0, "\(job.status): \(job.errors.map(\.message))")
            }
        }
    }

    @Test("a command child holds only its stdin, stdout and stderr: no socket or pipe of the worker or a sibling")
    func commandChildInheritsNothing() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let generator = try RendezvousGenerator(expected: 4)
            defer { generator.remove() }
            let jobs = try await runCommandJobs(4, generator: generator, queue: queue, schema: schema)
            for job in jobs {
                #expect(job.status == .completed, "\(job.errors.map(\.message))")
                let fds = try generator.descriptors(of: job.id)
                #expect(Set(fds.keys) == ["0", "1", "2"], "job \(job.id) held \(fds)")
                #expect(fds.values.allSatisfy { $0.hasPrefix("pipe:") }, "job \(job.id) held \(fds)")
            }
        }
    }
}
