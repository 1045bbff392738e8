import Foundation
import JobEngine
import Postgres
import TestSupport
import Testing

/// Runs the built `imagejobs` binary (`make test` exports its path as IMAGEJOBS_BIN).
struct CLI {
    static var binary: String? {
        let path = ProcessInfo.processInfo.environment["IMAGEJOBS_BIN"]
        return path.flatMap { FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil }
    }
    /// The drills' worker (`imagejobs-drill-worker`: the worker plus the `test.script` handler).
    static var drillWorker: String? {
        let path = ProcessInfo.processInfo.environment["IMAGEJOBS_DRILL_WORKER_BIN"]
        return path.flatMap { FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil }
    }
    static var isAvailable: Bool { binary != nil && drillWorker != nil && TestDatabase.isConfigured }

    let databaseURL: String

    struct Result: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the binary to completion on a thread of its own (waiting for a process must not
    /// block the cooperative pool, which runs the other tests).
    func run(_ arguments: [String], stdin: String? = nil) async throws -> Result {
        try await runOnNewThread(name: "cli-test") { Swift.Result { try self.runBlocking(arguments, stdin: stdin) } }.get()
    }

    private func runBlocking(_ arguments: [String], stdin: String?) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary!)
        p.arguments = arguments + ["--database-url", databaseURL]
        let out = Pipe(), err = Pipe(), input = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// Starts the binary in the background; its stderr goes to `stderr` when given (to show in
    /// a failure), else nowhere.
    func start(_ arguments: [String], stderr: URL? = nil) throws -> Process {
        try start(program: CLI.binary!, arguments, stderr: stderr)
    }

    /// Starts the drills' worker (`worker`'s flags, without the word `worker`) in the background.
    func startDrillWorker(_ arguments: [String], stderr: URL? = nil) throws -> Process {
        try start(program: CLI.drillWorker!, Array(arguments.drop { $0 == "worker" }), stderr: stderr)
    }

    private func start(program: String, _ arguments: [String], stderr: URL?) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = arguments + ["--database-url", databaseURL]
        p.standardOutput = FileHandle.nullDevice
        if let stderr {
            FileManager.default.createFile(atPath: stderr.path, contents: nil)
            p.standardError = try FileHandle(forWritingTo: stderr)
        } else {
            p.standardError = FileHandle.nullDevice
        }
        try p.run()
        return p
    }
}

let fastWorker = ["worker", "--poll-interval", "0.1", "--heartbeat-interval", "0.3", "--lease", "2", "--sweep-interval", "0.3",
                  "--shutdown-grace", "1", "--backoff-base", "0.1"]

@Suite("the CLI end to end", .enabled(if: CLI.isAvailable))
struct CLIEndToEndTests {
    @Test("submit a batch, run a worker process, every job completes; status, position, list, batch")
    func batchThroughWorker() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let conversation = UUID().uuidString.lowercased()
            let lines = (0..<20).map { i in
                #"{"conversation_id":"\#(conversation)","prompt":"picture \#(i) of a 'quoted' \"fox\"","priority":"\#(["high", "normal", "low"][i % 3])","width":256,"height":256}"#
            }
            let submitted = try await cli.run(["submit", "--batch", "-", "--json"], stdin: lines.joined(separator: "\n"))
            #expect(submitted.status == 0, "\(submitted.stderr)")
            let batch = try cliDecoder().decode(SubmittedBatch.self, from: Data(submitted.stdout.utf8))
            #expect(batch.jobIDs.count == 20)
            let position = try await cli.run(["position", batch.jobIDs[19].uuidString, "--json"])
            #expect(position.status == 0)
            let p = try cliDecoder().decode(QueuePosition.self, from: Data(position.stdout.utf8))
            let truth = try await queue.positionByCounting(batch.jobIDs[19])
            #expect(p.position == truth.position)

            let worker = try cli.start(fastWorker + ["--concurrency", "4"])
            let done = try await eventually { try await queue.batch(batch.batchID).counts[.completed] == 20 }
            worker.terminate()
            await waitForExit(worker)
            #expect(done)
            #expect(worker.terminationStatus == 0)

            let status = try await cli.run(["status", batch.jobIDs[0].uuidString, "--json"])
            #expect(status.stdout.contains("\"conversation_id\":\"\(conversation)\"") && !status.stdout.contains("group_id"))
            let job = try cliDecoder().decode(Job.self, from: Data(status.stdout.utf8))
            #expect(job.status == .completed)
            #expect(job.params["prompt"]?.stringValue == "picture 0 of a 'quoted' \"fox\"")
            let progress = try await cli.run(["batch", batch.batchID.uuidString, "--json"])
            #expect(try cliDecoder().decode(BatchProgress.self, from: Data(progress.stdout.utf8)).isFinished)
            let list = try await cli.run(["list", "--batch", batch.batchID.uuidString, "--status", "completed", "--json"])
            #expect(try cliDecoder().decode([Job].self, from: Data(list.stdout.utf8)).count == 20)

            // The stored PNG round-trips byte for byte through `imagejobs fetch`.
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(UUID()).png")
            defer { try? FileManager.default.removeItem(at: file) }
            let fetched = try await cli.run(["fetch", batch.jobIDs[0].uuidString, "-o", file.path])
            #expect(fetched.status == 0, "\(fetched.stderr)")
            let bytes = try [UInt8](Data(contentsOf: file))
            let stored = try await schema.pool.query("SELECT bytes, sha256 FROM job_results WHERE job_id = \(batch.jobIDs[0])")[0]
            #expect(bytes == [UInt8](try stored.decode("bytes", as: Data.self)))
            #expect(SHA256.hexDigest(bytes) == (try stored.decode("sha256", as: String.self)))
            #expect(status.stdout.contains("\"sha256\":\"\(SHA256.hexDigest(bytes))\""))
            #expect(try await schema.pool.int("SELECT count(*) FROM job_results WHERE metadata @> '{\"width\": 256, \"height\": 256}'") == 20)
        }
    }

    @Test("ids are lower-case in every output, text and JSON, and accepted in either case")
    func idsLowerCase() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let conversation = UUID().uuidString  // upper-case on input
            var outputs: [String] = []
            func run(_ arguments: [String], stdin: String? = nil, status: Int32 = 0) async throws -> String {
                let r = try await cli.run(arguments, stdin: stdin)
                #expect(r.status == status, "\(arguments): \(r.stderr)")
                outputs.append(r.stdout + r.stderr)
                return r.stdout
            }
            let one = try await run(["submit", "--conversation", conversation, "--prompt", "a fox"])
            let id = try #require(one.split(separator: " ").dropFirst().first.flatMap { UUID(uuidString: String($0)) })
            let submitted = try cliDecoder().decode(Job.self, from: Data(try await run(
                ["submit", "--conversation", conversation, "--prompt", "a fox", "--json"]).utf8))
            let batchItems = #"[{"conversation_id":"\#(conversation)","prompt":"a"},{"conversation_id":"\#(conversation)","prompt":"b"}]"#
            _ = try await run(["submit", "--batch", "-"], stdin: batchItems)
            let batch = try cliDecoder().decode(SubmittedBatch.self, from: Data(try await run(["submit", "--batch", "-", "--json"], stdin: batchItems).utf8))
            for arguments in [
                ["status", id.uuidString], ["status", id.uuidString, "--json"],
                ["position", id.uuidString], ["position", submitted.id.uuidString, "--json"],
                ["list", "--conversation", conversation], ["list", "--conversation", conversation, "--json"],
                ["batch", batch.batchID.uuidString], ["batch", batch.batchID.uuidString, "--json"],
                ["list", "--batch", batch.batchID.uuidString.lowercased(), "--json"],
            ] {
                _ = try await run(arguments)
            }
            _ = try await run(["cancel", id.uuidString])
            _ = try await run(["cancel", id.uuidString], status: 65)  // "job … is cancelled"
            _ = try await run(["status", UUID().uuidString], status: 66)  // "no job …"
            _ = try await run(["batch", UUID().uuidString], status: 66)  // "no batch …"
            #expect(try await queue.job(id).status == .cancelled)

            let uuid = try NSRegularExpression(pattern: "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", options: .caseInsensitive)
            var seen = 0
            for output in outputs {
                for match in uuid.matches(in: output, range: NSRange(output.startIndex..., in: output)) {
                    let text = String(output[Range(match.range, in: output)!])
                    #expect(text == text.lowercased(), "upper-case id in: \(output)")
                    seen += 1
                }
            }
            #expect(seen > outputs.count, "the outputs name \(seen) ids")
        }
    }

    @Test("a statement timeout inside a handler fails that attempt as retryable; the retry completes on the same connections")
    func statementTimeoutInHandler() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let slow = try await queue.submit(Factory.spec(params: ["db_sleep_ms": 3000, "db_timeout_ms": 100])).job.id
            let others = try await (0..<5).asyncMap { _ in try await queue.submit(Factory.spec()).job.id }
            let worker = try cli.startDrillWorker(fastWorker + ["--max-connections", "2"])
            let done = try await eventually {
                try await schema.pool.int("SELECT count(*) FROM jobs WHERE status = 'completed'") == others.count + 1
            }
            worker.terminate()
            await waitForExit(worker)
            #expect(done)
            let job = try await queue.job(slow)
            #expect(job.status == .completed && job.attempt == 2 && job.retryCount == 1)
            let message = job.errors.first?.message ?? ""
            #expect(message.contains("57014") && message.contains("statement timeout"), "\(message)")
            #expect(!message.contains("pg_sleep(3"), "the error names the statement, not its text: \(message)")
            #expect(worker.terminationStatus == 0)
        }
    }

    @Test("a worker killed mid-job has its job rescued and finished by another worker")
    func killedWorkerRescued() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            // The drills' handler exits its process on attempt 1.
            let id = try await queue.submit(Factory.spec(params: ["crash_attempts": .number(1)])).job.id
            let a = try cli.startDrillWorker(fastWorker)
            await waitForExit(a)
            #expect(a.terminationStatus == 3)
            #expect(try await queue.job(id).status == .running)
            let b = try cli.startDrillWorker(fastWorker)
            let done = try await eventually { try await queue.job(id).status == .completed }
            b.terminate()
            await waitForExit(b)
            #expect(done)
            let job = try await queue.job(id)
            #expect(job.attempt == 2)
            #expect(job.retryCount == 1)
            #expect(job.errors.first?.message.hasPrefix("worker lost") == true)
        }
    }

    @Test("bad input is refused with a clear message and exit code, and writes nothing")
    func badInput() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let c = UUID().uuidString
            let cases: [([String], String?, Int32, String)] = [
                (["submit", "--conversation", c, "--prompt", ""], nil, 64, "prompt must not be empty"),
                (["submit", "--conversation", c, "--prompt", "   "], nil, 64, "prompt must not be empty"),
                (["submit", "--conversation", c, "--prompt", String(repeating: "x", count: 4001)], nil, 64, "at most 4000 characters"),
                (["submit", "--conversation", c, "--prompt", "ok", "--width", "100"], nil, 64, "width must be 64–2048 in steps of 8"),
                (["submit", "--conversation", c, "--prompt", "ok", "--height", "4096"], nil, 64, "height"),
                (["submit", "--conversation", c, "--prompt", "ok", "--priority", "urgent"], nil, 64, "priority must be high, normal or low"),
                (["submit", "--conversation", c, "--prompt", "ok", "--timeout", "0"], nil, 64, "timeout must be between"),
                (["submit", "--conversation", c, "--prompt", "ok", "--max-retries", "26"], nil, 64, "max_retries must be between"),
                (["submit", "--conversation", "not-a-uuid", "--prompt", "ok"], nil, 64, "is not a UUID"),
                (["submit", "--batch", "-"], "", 64, "empty"),
                (["submit", "--batch", "-"], "[{\"conversation_id\":\"\(c)\",\"prompt\":\"a\"},{\"conversation_id\":\"\(UUID())\",\"prompt\":\"b\"}]", 64, "item 1: conversation_id"),
                (["submit", "--batch", "-"], "{\"conversation_id\":\"\(c)\",\"prompt\":\"a\"}\n{\"conversation_id\":\"\(c)\",\"prompt\":\"b\",\"width\":9}", 64, "item 1: width"),
                (["submit", "--batch", "-"], "{\"conversation_id\":\"\(c)\",\"prompt\":\"a\",\"colour\":1}", 64, "unknown field"),
                (["submit", "--batch", "-"], "[{\"conversation_id\":", 64, "not a valid JSON"),
                (["status", UUID().uuidString], nil, 66, "no job"),
                (["cancel", UUID().uuidString], nil, 66, "no job"),
                (["fetch", UUID().uuidString, "-o", "/tmp/never.png"], nil, 66, "no job"),
                (["position", "12345"], nil, 64, "is not a UUID"),
                (["list", "--status", "done"], nil, 64, "status must be"),
                (["list", "--limit", "0"], nil, 64, "limit must be between 1 and 10000"),
                (["submit", "--conversation", c, "--prompt", "ok", "--negative-prompt", String(repeating: "n", count: 4001)], nil, 64, "negative_prompt"),
                (["submit", "--conversation", c, "--prompt", "ok", "--steps", "0"], nil, 64, "steps must be 1–150"),
                (["submit", "--conversation", c, "--prompt", "ok", "--steps", "151"], nil, 64, "steps must be 1–150"),
                (["submit", "--conversation", c, "--prompt", "ok", "--seed", "4294967296"], nil, 64, "seed must be"),
                (["submit", "--conversation", c, "--prompt", "ok", "--seed=-1"], nil, 64, "seed must be"),
                (["submit", "--conversation", c, "--prompt", "ok", "--model", "two words"], nil, 64, "model must be"),
                (["submit", "--conversation", c, "--prompt", "ok", "--width", "0"], nil, 64, "width must be"),
                (["submit", "--conversation", c, "--prompt", "ok", "--height", "2056"], nil, 64, "height must be"),
                (["submit", "--conversation", c, "--prompt", "ok", "--timeout", "86401"], nil, 64, "timeout must be between"),
                (["submit", "--conversation", c, "--prompt", "ok", "--timeout", "nan"], nil, 64, "timeout must be a number of seconds"),
                (["submit", "--conversation", c, "--prompt", "ok", "--timeout", "1e300"], nil, 64, "timeout must be a number of seconds"),
                (["submit", "--conversation", c, "--prompt", "ok", "--timeout=-5"], nil, 64, "timeout must be between"),
                (["submit", "--conversation", c, "--prompt", "ok", "--max-retries=-1"], nil, 64, "max_retries must be between"),
                (["submit", "--conversation", c, "--prompt", "ok", "--idempotency-key", String(repeating: "k", count: 201)], nil, 64, "idempotency_key must be"),
                (["submit", "--prompt", "ok"], nil, 64, "--conversation and --prompt are required"),
                (["submit", "--batch", "-"], "[1]", 64, "item 0: each batch item must be a JSON object"),
                (["submit", "--batch", "-"], "[{}]", 64, "item 0: conversation_id is required"),
                (["submit", "--batch", "-"], "[{\"conversation_id\":\"\(c)\",\"prompt\":7}]", 64, "item 0: prompt must be a string"),
                (["submit", "--batch", "-"], "[{\"conversation_id\":\"\(c)\",\"prompt\":\"a\",\"width\":\"512\"}]", 64, "item 0: width must be an integer"),
                (["submit", "--batch", "-"], "[{\"conversation_id\":\"\(c)\",\"prompt\":\"a\\u0000b\"}]", 64, "item 0: prompt must not contain NUL"),
                (["submit", "--batch", "-"], "[{\"conversation_id\":\"\(c)\",\"prompt\":\"bell\\u0007\"}]", 64, "item 0: prompt must not contain control characters"),
                (["submit", "--batch", "-"], "[{\"conversation_id\":\"\(c)\",\"prompt\":\"a\",\"idempotency_key\":\"k\"},{\"conversation_id\":\"\(c)\",\"prompt\":\"b\",\"idempotency_key\":\"k\"}]", 64, "item 1: idempotency_key repeats"),
                (["submit", "--batch", "-"], "[" + Array(repeating: "{\"conversation_id\":\"\(c)\",\"prompt\":\"a\"}", count: 10_001).joined(separator: ",") + "]", 64, "at most 10000 jobs"),
                (["submit", "--batch", "/nonexistent/batch.json"], nil, 64, "cannot read batch file"),
            ]
            for (args, stdin, code, message) in cases {
                let r = try await cli.run(args, stdin: stdin)
                #expect(r.status == code, "\(args.prefix(3)): \(r.stderr)")
                #expect(r.stderr.contains(message), "\(args.prefix(3)): \(r.stderr)")
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 0)
            #expect(cases.count >= 40)

            // Injection-like prompts are accepted and come back byte for byte.
            let hostile = ["'; DROP TABLE jobs;--", "$1", "\\'\\\"", "“quoted” ‘text’", "%s%n%x", String(repeating: "'\"", count: 1999), "-- comment", "\\x00"]
            for prompt in hostile {
                let r = try await cli.run(["submit", "--conversation", c, "--prompt=\(prompt)", "--json"])
                #expect(r.status == 0, "\(r.stderr)")
                let job = try cliDecoder().decode(Job.self, from: Data(r.stdout.utf8))
                let back = try await cli.run(["status", job.id.uuidString, "--json"])
                #expect(try cliDecoder().decode(Job.self, from: Data(back.stdout.utf8)).params["prompt"]?.stringValue == prompt)
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == hostile.count)
            let pending = try await queue.list(limit: 1)[0].id
            let retry = try await cli.run(["retry", pending.uuidString])
            #expect(retry.status == 65 && retry.stderr.contains("only jobs in error can be retried"))
            let unreachable = CLI(databaseURL: "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
            #expect(try await unreachable.run(["status", UUID().uuidString]).status == 69)
        }
    }
}

/// Waits for a child process without blocking a cooperative thread.
func waitForExit(_ process: Process) async {
    let box = UncheckedBox(process)
    await runOnNewThread(name: "wait-exit") { box.value.waitUntilExit() }
}

struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Decodes the CLI's JSON into the engine's types: dates as ISO 8601 with milliseconds, and
/// the product's `conversation_id` as the engine's `group_id`.
struct CLIDecoder {
    func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { d in
            let text = try d.singleValueContainer().decode(String.self)
            let f = ISO8601DateFormatter()
            f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            guard let date = f.date(from: text) else { throw DecodingError.dataCorrupted(.init(codingPath: d.codingPath, debugDescription: text)) }
            return date
        }
        func engineNames(_ value: JSONValue) -> JSONValue {
            switch value {
            case .object(let o):
                return .object(Dictionary(uniqueKeysWithValues: o.map { ($0.key == "conversation_id" ? "group_id" : $0.key, engineNames($0.value)) }))
            case .array(let a): return .array(a.map(engineNames))
            default: return value
            }
        }
        let renamed = engineNames(try JSONDecoder().decode(JSONValue.self, from: data))
        return try decoder.decode(T.self, from: try JSONEncoder().encode(renamed))
    }
}

func cliDecoder() -> CLIDecoder { CLIDecoder() }

@Suite("the benchmark's smoke run", .enabled(if: CLI.isAvailable))
struct BenchSmokeTests {
    @Test("bench --quick runs its enqueue, processing and position tests and verifies them")
    func quickBench() async throws {
        let cli = CLI(databaseURL: TestDatabase.url!)
        let r = try await cli.run(["bench", "--quick", "--json", "--n", "300", "--tests", "enqueue_single,enqueue_bulk,process,pickup_latency"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
        #expect(lines.count == 8)
        for line in lines {
            #expect(line?["verified"] == .bool(true), "\(String(describing: line))")
            #expect((line?["jobs_per_s"]?.doubleValue ?? line?["p50_ms"]?.doubleValue ?? 0) > 0)
        }
    }
}
