import ArgumentParser
import Foundation
import JobEngine
import Logging
import Postgres

/// `imagejobs bench`: throughput, latency, position and lookup speed, memory and database cost,
/// measured against a real PostgreSQL in a schema of its own (dropped afterwards).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure enqueue, processing, pickup latency, position/lookup, memory and database cost.")
    @OptionGroup var database: DatabaseOptions
    @Flag(help: "Seconds, not minutes: small N, short runs, position up to 100,000 jobs.") var quick = false
    @Flag(help: "Print one JSON object per result instead of the table.") var json = false
    @Option(help: "Jobs per enqueue and processing test (default 20,000; 2,000 with --quick).") var n: Int?
    @Option(help: "on or off: the queue's fair share during the tests (the scheduling test sets its own).") var fairShare = "on"

    @Option(help: "Comma-separated tests: enqueue_single, enqueue_concurrent, enqueue_bulk, process, process_multi, pickup_latency, position, scheduling, memory, idle_fleet.")
    var tests: String = "enqueue_single,enqueue_concurrent,enqueue_bulk,process,process_multi,pickup_latency,position,scheduling,memory,idle_fleet"
    @Option(help: "Callers of the enqueue_concurrent test, each submitting one job per call.") var callers: Int = 50
    @Flag(help: "Print RESULT lines in the peer benchmark's format, configured by BENCH_* variables.") var peerProtocol = false

    func validate() throws {
        if !["on", "off"].contains(fairShare) { throw ValidationError("--fair-share must be on or off") }
        if !(1...1000).contains(callers) { throw ValidationError("--callers must be 1–1000") }
    }

    func run() async throws {
        try await runCommand {
            var bench = try Bench(options: self)
            try await bench.runAll()
        }
    }
}

/// One benchmark figure.
struct BenchResult {
    var fields: [String: JSONValue]
    init(_ test: String, _ fields: [String: JSONValue]) {
        self.fields = fields
        self.fields["test"] = .string(test)
    }
}

struct Bench {
    let options: BenchCommand
    let env = ProcessInfo.processInfo.environment
    let n: Int
    let batchSizes: [Int]
    let concHigh: Int
    let rates: [Int]
    let latencySeconds: Double
    let callers: Int
    let peerMode: Bool
    var results: [BenchResult] = []
    let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
    let configuration: PGConfiguration
    let schema = "bench_" + UUID().uuidString.prefix(8).lowercased()

    init(options: BenchCommand) throws {
        self.options = options
        peerMode = options.peerProtocol
        let env = ProcessInfo.processInfo.environment
        func int(_ key: String) -> Int? { env[key].flatMap { Int($0) } }
        func list(_ key: String) -> [Int]? { env[key].map { $0.split(separator: ",").compactMap { Int($0) } } }
        if peerMode {
            n = int("BENCH_N") ?? 20_000
            batchSizes = list("BENCH_BATCH_SIZES") ?? [100, 1000]
            concHigh = int("BENCH_CONC_HIGH") ?? 10
            rates = list("BENCH_LAT_RATES") ?? [50, 200]
            latencySeconds = env["BENCH_LAT_SECONDS"].flatMap { Double($0) } ?? 10
            callers = int("BENCH_CALLERS") ?? 50
            configuration = PGConfiguration(connectionString: env["BENCH_DSN"] ?? "")
        } else {
            n = options.n ?? (options.quick ? 2000 : 20_000)
            batchSizes = [100, 1000]
            concHigh = 10
            rates = [50, 200]
            latencySeconds = options.quick ? 2 : 10
            callers = options.callers
            configuration = try options.database.configuration()
        }
    }

    var testNames: Set<String> {
        peerMode ? ["enqueue_single", "enqueue_concurrent", "enqueue_bulk", "process", "pickup_latency"]
            : Set(options.tests.split(separator: ",").map { String($0.trimmingCharacters(in: .whitespaces)) })
    }

    /// A pool on the benchmark's schema.
    func pool(_ max: Int = 4, app: String = "imagejobs-bench") -> PGPool {
        var c = configuration
        c.searchPath = schema
        c.applicationName = app
        c.statementTimeout = .seconds(300)
        return PGPool(configuration: c, options: .init(maxConnections: max), logger: logger)
    }

    /// The connection string child worker processes get (the schema via `options`).
    var childURL: String {
        let base = configuration.connectionString
        if base.contains("://") {
            return base + (base.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
        }
        return base + " options='-csearch_path=\(schema)'"
    }

    mutating func runAll() async throws {
        let admin = PGPool(configuration: configuration, options: .init(maxConnections: 1), logger: logger)
        try await admin.query("CREATE SCHEMA \(identifier: schema)")
        defer { Task { [schema] in _ = try? await admin.query("DROP SCHEMA \(identifier: schema) CASCADE") } }
        let main = pool(6)
        try await Migrator(pool: main, logger: logger).up()
        let queue = JobQueue(pool: main, logger: logger)
        try await queue.setFairShare(options.fairShare != "off")
        let tests = testNames
        if tests.contains("enqueue_single") { try await enqueueSingle(queue) }
        if tests.contains("enqueue_concurrent") { try await enqueueConcurrent() }
        if tests.contains("enqueue_bulk") { try await enqueueBulk(queue) }
        if tests.contains("process") {
            for c in concurrencies(default: Array(Set([1, concHigh] + (peerMode ? [] : [50]))).sorted()) {
                try await process(queue, concurrency: c)
            }
        }
        if tests.contains("process_multi") { for k in [2, 4] { try await processMulti(queue, processes: k) } }
        if tests.contains("pickup_latency") { for r in rates { try await pickupLatency(queue, rate: r) } }
        if tests.contains("position") {
            for size in options.quick ? [10_000, 100_000] : [10_000, 100_000, 1_000_000] { try await position(queue, pending: size) }
        }
        if tests.contains("scheduling") { try await scheduling(queue) }
        if tests.contains("memory") { try await memory(queue) }
        if tests.contains("idle_fleet") { try await idleFleet(queue) }
        await main.close()
        try await admin.query("DROP SCHEMA \(identifier: schema) CASCADE")
        await admin.close()
        if !options.json && !peerMode { printTable() }
    }

    mutating func emit(_ result: BenchResult) {
        var r = result
        if peerMode {
            r.fields["peer"] = .string("imagejobs")
            r.fields["peer_version"] = .string("0.1.0")
            r.fields["run_id"] = .string(env["BENCH_RUN_ID"] ?? "")
            r.fields["ts"] = .number(Date().timeIntervalSince1970)
            r.fields["loadavg"] = .array(Self.loadavg().map { .number($0) })
        }
        results.append(r)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let line = String(decoding: (try? encoder.encode(r.fields)) ?? Data(), as: UTF8.self)
        if peerMode { print("RESULT " + line) } else if options.json { print(line) } else {
            FileHandle.standardError.write(Data("  \(r.fields["test"]?.stringValue ?? "") done\n".utf8))
        }
    }

    static func loadavg() -> [Double] {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return [] }
        return text.split(separator: " ").prefix(3).compactMap { Double($0) }
    }

    func reset(_ pool: PGPool) async throws {
        try await pool.query("TRUNCATE jobs, batches, job_results, job_count_deltas, job_counts_second, job_counts_minute, job_counts_hour, job_rate_tokens, batch_events, workers")
    }

    func noopSpec(_ i: Int, conversation: UUID) -> JobSpec {
        JobSpec(kind: "bench.noop", params: ["i": .number(Double(i)), "t0": .number(Date().timeIntervalSince1970)], groupID: conversation)
    }

    // MARK: Enqueue

    mutating func enqueueSingle(_ queue: JobQueue) async throws {
        try await reset(queue.pool)
        let conversation = UUID()
        var latencies: [Double] = []
        latencies.reserveCapacity(n)
        let start = Date()
        for i in 0..<n {
            let t = Date()
            _ = try await queue.submit(noopSpec(i, conversation: conversation))
            latencies.append(Date().timeIntervalSince(t) * 1000)
        }
        let elapsed = Date().timeIntervalSince(start)
        let count = try await queue.pool.scalar(as: Int.self, "SELECT count(*) FROM jobs")
        emit(BenchResult("enqueue_single", [
            "status": "ok", "verified": .bool(count == n), "n": .number(Double(n)), "elapsed_s": .number(elapsed),
            "jobs_per_s": .number(Double(n) / elapsed), "p50_ms": .number(percentile(latencies, 50)), "p99_ms": .number(percentile(latencies, 99)),
        ]))
    }

    /// Many callers at once, one job per call, as a web backend's request handlers submit:
    /// each on its own task, all through one queue (whose submits group their commits).
    mutating func enqueueConcurrent() async throws {
        let pool = pool(max(4, min(callers, 20)))
        defer { Task { await pool.close() } }
        let queue = JobQueue(pool: pool, logger: logger)
        try await reset(pool)
        let total = n, callers = self.callers
        let start = Date()
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for c in 0..<callers {
                group.addTask {
                    var mine: [Double] = []
                    let conversation = UUID()
                    for i in stride(from: c, to: total, by: callers) {
                        let t = Date()
                        _ = try await queue.submit(
                            JobSpec(kind: "bench.noop", params: ["i": .number(Double(i)), "t0": .number(Date().timeIntervalSince1970)], groupID: conversation))
                        mine.append(Date().timeIntervalSince(t) * 1000)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }
        }
        let elapsed = Date().timeIntervalSince(start)
        let count = try await pool.scalar(as: Int.self, "SELECT count(*) FROM jobs")
        emit(BenchResult("enqueue_concurrent", [
            "status": "ok", "verified": .bool(count == n), "n": .number(Double(n)), "callers": .number(Double(callers)),
            "elapsed_s": .number(elapsed), "jobs_per_s": .number(Double(n) / elapsed),
            "p50_ms": .number(percentile(latencies, 50)), "p99_ms": .number(percentile(latencies, 99)),
        ]))
    }

    mutating func enqueueBulk(_ queue: JobQueue) async throws {
        for size in batchSizes {
            try await reset(queue.pool)
            let conversation = UUID()
            var latencies: [Double] = []
            let start = Date()
            var i = 0
            while i < n {
                let count = min(size, n - i)
                let specs = (i..<(i + count)).map { noopSpec($0, conversation: conversation) }
                let t = Date()
                _ = try await queue.submitBatch(specs, groupID: conversation)
                latencies.append(Date().timeIntervalSince(t) * 1000)
                i += count
            }
            let elapsed = Date().timeIntervalSince(start)
            let count = try await queue.pool.scalar(as: Int.self, "SELECT count(*) FROM jobs")
            emit(BenchResult("enqueue_bulk", [
                "status": "ok", "verified": .bool(count == n), "n": .number(Double(n)), "batch_size": .number(Double(size)),
                "elapsed_s": .number(elapsed), "jobs_per_s": .number(Double(n) / elapsed),
                "p50_ms": .number(percentile(latencies, 50)), "p99_ms": .number(percentile(latencies, 99)),
            ]))
        }
    }

    /// Bulk-enqueues `count` no-op jobs (not timed) in batches spread over `conversations`,
    /// then ANALYZE and CHECKPOINT.
    func preload(_ queue: JobQueue, count: Int, conversations: Int = 1) async throws {
        try await reset(queue.pool)
        let groups = (0..<max(1, conversations)).map { _ in UUID() }
        let perBatch = max(1, min(10_000, count / groups.count))
        var i = 0
        while i < count {
            let chunk = min(perBatch, count - i)
            let conversation = groups[(i / perBatch) % groups.count]
            _ = try await queue.submitBatch((i..<(i + chunk)).map { noopSpec($0, conversation: conversation) }, groupID: conversation)
            i += chunk
        }
        try await queue.pool.query("ANALYZE jobs")
        _ = try? await queue.pool.query("CHECKPOINT")
    }

    // MARK: Processing

    mutating func process(_ queue: JobQueue, concurrency: Int, conversations: Int = 1, variant: String = "default") async throws {
        try await preload(queue, count: n, conversations: conversations)
        let recorder = Recorder(n: n)
        var config = WorkerConfiguration()
        config.concurrency = concurrency
        config.pollInterval = .milliseconds(200)
        let workerPool = pool(min(8, concurrency + 2), app: "imagejobs-bench-worker")
        let worker = Worker(pool: workerPool, handlers: [NoopHandler(recorder: recorder)], configuration: config, logger: logger)
        let xactBefore = try await xactCommits(queue.pool)
        let task = Task { try await worker.run() }
        let deadline = Date().addingTimeInterval(Double(env["BENCH_PHASE_TIMEOUT"].flatMap { Double($0) } ?? 300))
        var completedAt: Date?
        while Date() < deadline {
            if recorder.seen >= n, try await queue.pool.scalar(as: Int.self, "SELECT count(*) FROM jobs WHERE status = 'completed'") == n {
                completedAt = Date()
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        task.cancel()
        _ = await task.result
        await workerPool.close()
        let statements = await workerPool.statementsSent
        let xacts = try await xactCommits(queue.pool) - xactBefore
        let first = recorder.firstStart ?? Date()
        let elapsed = (completedAt ?? Date()).timeIntervalSince(first)
        let handlerElapsed = (recorder.lastStart ?? first).timeIntervalSince(first)
        let onceEach = recorder.exactlyOnce
        emit(BenchResult("process", [
            "status": .string(completedAt == nil ? "timeout" : "ok"), "verified": .bool(completedAt != nil && onceEach),
            "n": .number(Double(n)), "concurrency": .number(Double(concurrency)), "variant": .string(variant),
            "conversations": .number(Double(conversations)),
            "settings": .object(["poll_interval_ms": 200, "batched_completions": true]),
            "elapsed_s": .number(elapsed), "jobs_per_s": .number(Double(n) / elapsed),
            "handler_jobs_per_s": .number(Double(n) / max(handlerElapsed, 0.000001)),
            "statements_per_job": .number(Double(statements) / Double(n)), "transactions_per_job": .number(Double(xacts) / Double(n)),
        ]))
    }

    /// BENCH_CONCURRENCIES=10,50 picks the processing levels (for profiling one of them).
    func concurrencies(default levels: [Int]) -> [Int] {
        env["BENCH_CONCURRENCIES"].map { $0.split(separator: ",").compactMap { Int($0) } } ?? levels
    }

    func xactCommits(_ pool: PGPool) async throws -> Int {
        try await pool.scalar(as: Int.self, "SELECT xact_commit::bigint FROM pg_stat_database WHERE datname = current_database()")
    }

    mutating func processMulti(_ queue: JobQueue, processes: Int, conversations: Int = 1, variant: String = "default") async throws {
        try await preload(queue, count: n, conversations: conversations)
        var children: [Process] = []
        for _ in 0..<processes { children.append(try spawnWorker(concurrency: concHigh)) }
        let start = Date()
        var maxWaiting = 0
        var samples = 0
        // Every waiting lock of a worker backend, by what it waits for (a row of `jobs` held by
        // another claimer would show as `transactionid` or `tuple`), sampled every 10 ms.
        var waitsByType: [String: Int] = [:]
        while Date().timeIntervalSince(start) < 300 {
            let rows = try await queue.pool.query(
                """
                SELECT l.locktype, l.mode, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 48) AS statement
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE NOT l.granted AND a.application_name LIKE 'imagejobs-worker-%'
                """)
            for row in rows {
                let key = "\(try row.decode("locktype", as: String.self)) \(try row.decode("mode", as: String.self)) in \(try row.decode("statement", as: String.self))"
                waitsByType[key, default: 0] += 1
            }
            maxWaiting = max(maxWaiting, rows.count)
            samples += 1
            // Sampled every 10 ms (a lock wait between claimers lasts about one statement);
            // the drain is checked every 100 ms.
            if samples % 10 == 0,
               try await queue.pool.scalar(as: Int.self, "SELECT count(*) FROM jobs WHERE status = 'completed'") == n { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        for child in children { child.terminate() }
        for child in children { child.waitUntilExit() }
        let row = try await queue.pool.query(
            """
            SELECT count(*) FILTER (WHERE status = 'completed') AS done, count(*) FILTER (WHERE attempt <> 1) AS repeated,
                   extract(epoch FROM max(finished_at) - min(started_at))::float8 AS elapsed
            FROM jobs
            """)[0]
        let done: Int = try row.decode("done")
        let repeated: Int = try row.decode("repeated")
        let elapsed: Double = (try row.decode("elapsed", as: Double?.self)) ?? 0
        emit(BenchResult("process_multi", [
            "status": .string(done == n ? "ok" : "incomplete"), "verified": .bool(done == n && repeated == 0),
            "n": .number(Double(n)), "processes": .number(Double(processes)), "concurrency": .number(Double(concHigh)),
            "variant": .string(variant), "conversations": .number(Double(conversations)),
            "elapsed_s": .number(elapsed), "jobs_per_s": .number(Double(n) / max(elapsed, 0.000001)),
            "lock_waits_max": .number(Double(maxWaiting)), "lock_samples": .number(Double(samples)),
            "lock_waits_by_type": .object(waitsByType.mapValues { .number(Double($0)) }),
        ]))
    }

    /// A worker process that runs the benchmark's no-op jobs: `imagejobs-drill-worker`, built
    /// beside this binary (the shipped worker has no benchmark kind).
    func spawnWorker(concurrency: Int, pollInterval: Double = 0.2) throws -> Process {
        let p = Process()
        let here = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        p.executableURL = here.appendingPathComponent("imagejobs-drill-worker")
        guard FileManager.default.isExecutableFile(atPath: p.executableURL!.path) else {
            throw CLIError.badInput("the multi-process tests need imagejobs-drill-worker beside imagejobs (swift build -c release --product imagejobs-drill-worker)")
        }
        p.arguments = ["--bench-noop", "--concurrency", "\(concurrency)", "--poll-interval", "\(pollInterval)",
                       "--database-url", childURL, "--log-level", "error"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    // MARK: Latency

    mutating func pickupLatency(_ queue: JobQueue, rate: Int) async throws {
        try await reset(queue.pool)
        let total = Int(Double(rate) * latencySeconds)
        let recorder = Recorder(n: total)
        var config = WorkerConfiguration()
        config.concurrency = concHigh
        config.pollInterval = .seconds(1)
        let workerPool = pool(min(8, concHigh + 2), app: "imagejobs-bench-worker")
        let worker = Worker(pool: workerPool, handlers: [NoopHandler(recorder: recorder)], configuration: config, logger: logger)
        let task = Task { try await worker.run() }
        try await Task.sleep(for: .seconds(2))
        let producerPool = pool(1, app: "imagejobs-bench-producer")
        let producer = JobQueue(pool: producerPool, logger: logger)
        let conversation = UUID()
        var t0s = [Double](repeating: 0, count: total)
        var calls: [Double] = []
        let start = Date()
        for k in 0..<total {
            let due = start.addingTimeInterval(Double(k) / Double(rate))
            let wait = due.timeIntervalSinceNow
            if wait > 0 { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
            let t0 = Date()
            t0s[k] = t0.timeIntervalSince1970
            _ = try await producer.submit(JobSpec(kind: "bench.noop", params: ["i": .number(Double(k)), "t0": .number(t0s[k])], groupID: conversation))
            calls.append(Date().timeIntervalSince(t0) * 1000)
        }
        let achieved = Double(total) / Date().timeIntervalSince(start)
        let settle = Date().addingTimeInterval(10)
        while recorder.seen < total && Date() < settle { try await Task.sleep(for: .milliseconds(20)) }
        task.cancel()
        _ = await task.result
        await workerPool.close()
        await producerPool.close()
        let latencies = recorder.latenciesMs(t0: t0s)
        emit(BenchResult("pickup_latency", [
            "status": .string(latencies.count == total ? "ok" : "incomplete"), "verified": .bool(recorder.exactlyOnce && latencies.count == total),
            "rate_per_s": .number(Double(rate)), "achieved_rate_per_s": .number(achieved), "concurrency": .number(Double(concHigh)),
            "variant": "default", "settings": .object(["listen": true, "poll_interval_ms": 1000]),
            "received": .number(Double(latencies.count)), "n": .number(Double(total)),
            "p50_ms": .number(percentile(latencies, 50)), "p90_ms": .number(percentile(latencies, 90)),
            "p95_ms": .number(percentile(latencies, 95)), "p99_ms": .number(percentile(latencies, 99)),
            "max_ms": .number(latencies.max() ?? 0), "mean_ms": .number(latencies.isEmpty ? 0 : latencies.reduce(0, +) / Double(latencies.count)),
            "enqueue_call_p50_ms": .number(percentile(calls, 50)), "enqueue_call_p99_ms": .number(percentile(calls, 99)),
        ]))
    }

    // MARK: Position and lookup

    /// Processing with fair share on and off across 1,000 active conversations, and positions
    /// among fair tags across 10,000 conversations.
    /// BENCH_ROUNDS=3 repeats each strict and fair-share pair, alternating, for the medians a
    /// noisy machine needs.
    mutating func scheduling(_ queue: JobQueue) async throws {
        let rounds = env["BENCH_ROUNDS"].flatMap { Int($0) }.map { max(1, $0) } ?? 1
        for concurrency in concurrencies(default: [10, 50]) {
            for _ in 0..<rounds {
                for fair in [false, true] {
                    try await queue.setFairShare(fair)
                    try await process(queue, concurrency: concurrency, conversations: 1000, variant: fair ? "fair_share" : "strict")
                }
            }
        }
        try await queue.setFairShare(true)
        // Four processes with a cap and a rate limit on: every job goes through the admitter;
        // the lock sampling shows whether any claimer waits for another.
        try await queue.setLimits(.kind("bench.noop"), perGroup: .set(20), rate: .set(JobRate(count: 100_000, period: .seconds(1))))
        try await processMulti(queue, processes: 4, conversations: 1000, variant: "fair_share_cap_rate")
        try await queue.setLimits(.kind("bench.noop"), perGroup: .remove, rate: .remove)
        let pending = options.quick ? 100_000 : 1_000_000
        try await reset(queue.pool)
        // 10,000 conversations' jobs tagged as the inserts tag them: each group's phase within
        // a turn, one turn (10 s) apart.
        try await queue.pool.query(
            """
            INSERT INTO jobs (id, group_id, kind, params, priority, tag)
            SELECT gen_random_uuid(), g.id, 'bench.noop', '{}', (ARRAY['high', 'normal', 'low'])[1 + k % 3]::job_priority,
                   now() + job_group_phase(g.id) * interval '10 seconds' + (k / 3) * interval '10 seconds'
            FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 10000)) g, generate_series(0, \(pending / 10_000 - 1)) k
            """)
        try await samplePositions(queue, pending: pending, test: "position_fair", extra: ["conversations": 10_000])
    }

    mutating func position(_ queue: JobQueue, pending: Int) async throws {
        try await reset(queue.pool)
        // Jobs created over the last `pending` milliseconds, a third of each priority.
        try await queue.pool.query(
            """
            INSERT INTO jobs (id, group_id, kind, params, priority, created_at, next_attempt_at, tag)
            SELECT gen_random_uuid(), gen_random_uuid(), 'bench.noop', jsonb_build_object('i', g),
                   (ARRAY['high', 'normal', 'low'])[1 + g % 3]::job_priority,
                   now() - (\(pending) - g) * interval '1 millisecond', now() - (\(pending) - g) * interval '1 millisecond',
                   now() - (\(pending) - g) * interval '1 millisecond'
            FROM generate_series(1, \(pending)) g
            """)
        try await samplePositions(queue, pending: pending, test: "position")
    }

    /// Folds the counts (as the sweep would), then times 200 positions and lookups of random
    /// pending jobs, checking five against the brute-force count.
    mutating func samplePositions(_ queue: JobQueue, pending: Int, test: String, extra: [String: JSONValue] = [:]) async throws {
        _ = try await Maintenance(pool: queue.pool, logger: logger).sweep()
        try await queue.pool.query("VACUUM ANALYZE jobs")
        let ids = try await queue.pool.query("SELECT id FROM jobs TABLESAMPLE SYSTEM (5) LIMIT 200").map { try $0.decode("id", as: UUID.self) }
        var positionMs: [Double] = []
        var lookupMs: [Double] = []
        var exact = 0
        for (k, id) in ids.enumerated() {
            var t = Date()
            let p = try await queue.position(id)
            positionMs.append(Date().timeIntervalSince(t) * 1000)
            t = Date()
            _ = try await queue.job(id)
            lookupMs.append(Date().timeIntervalSince(t) * 1000)
            if k < 5, try await queue.positionByCounting(id).position == p.position { exact += 1 }
        }
        let countStart = Date()
        _ = try await queue.positionByCounting(ids.last!)
        let countMs = Date().timeIntervalSince(countStart) * 1000
        // The dashboard's overview, read as its feed reads it once a second.
        var overviewMs: [Double] = []
        for _ in 0..<50 {
            let t = Date()
            _ = try await queue.overview()
            overviewMs.append(Date().timeIntervalSince(t) * 1000)
        }
        emit(BenchResult(test, extra.merging([
            "status": "ok", "verified": .bool(exact == min(5, ids.count)), "pending": .number(Double(pending)),
            "samples": .number(Double(ids.count)),
            "position_p50_ms": .number(percentile(positionMs, 50)), "position_p99_ms": .number(percentile(positionMs, 99)),
            "lookup_p50_ms": .number(percentile(lookupMs, 50)), "lookup_p99_ms": .number(percentile(lookupMs, 99)),
            "count_star_ms": .number(countMs),
            "overview_p50_ms": .number(percentile(overviewMs, 50)), "overview_p99_ms": .number(percentile(overviewMs, 99)),
        ]) { a, _ in a }))
    }

    // MARK: Memory and idle load

    mutating func memory(_ queue: JobQueue) async throws {
        let count = options.quick ? 10_000 : 100_000
        try await preload(queue, count: count)
        let child = try spawnWorker(concurrency: 50)
        var samples: [Int] = []
        while try await queue.pool.scalar(as: Int.self, "SELECT count(*) FROM jobs WHERE status = 'completed'") < count {
            if let rss = Self.rssKB(child.processIdentifier) { samples.append(rss) }
            if !child.isRunning { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let peakKB = Self.peakKB(child.processIdentifier) ?? samples.max() ?? 0
        child.terminate()
        child.waitUntilExit()
        let tenth = max(1, samples.count / 10)
        let early = samples.prefix(tenth).max() ?? 0
        let late = samples.suffix(tenth).max() ?? 0
        emit(BenchResult("memory", [
            "status": "ok", "n": .number(Double(count)), "concurrency": 50, "peak_rss_mb": .number(Double(peakKB) / 1024),
            "rss_first_tenth_mb": .number(Double(early) / 1024), "rss_last_tenth_mb": .number(Double(late) / 1024),
            "samples": .number(Double(samples.count)),
            "rss_by_tenth_mb": .array((0..<10).map { t in
                let slice = samples.dropFirst(samples.count * t / 10).prefix(max(1, samples.count / 10))
                return .number(Double(slice.max() ?? 0) / 1024)
            }),
        ]))
    }

    static func rssKB(_ pid: Int32) -> Int? { statusField(pid, "VmRSS:") }
    static func peakKB(_ pid: Int32) -> Int? { statusField(pid, "VmHWM:") }
    static func statusField(_ pid: Int32, _ key: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
    }

    mutating func idleFleet(_ queue: JobQueue) async throws {
        try await reset(queue.pool)
        var children: [Process] = []
        for _ in 0..<20 { children.append(try spawnWorker(concurrency: 1, pollInterval: 1)) }
        try await Task.sleep(for: .seconds(3))  // let them start and connect
        let seconds: Double = options.quick ? 3 : 10
        let before = try await xactCommits(queue.pool)
        let start = Date()
        try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
        let after = try await xactCommits(queue.pool)
        let elapsed = Date().timeIntervalSince(start)
        let backends = try await queue.pool.scalar(as: Int.self, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'imagejobs-worker-%'")
        for child in children { child.terminate() }
        for child in children { child.waitUntilExit() }
        emit(BenchResult("idle_fleet", [
            "status": "ok", "processes": 20, "seconds": .number(elapsed), "transactions_per_s": .number(Double(after - before - 1) / elapsed),
            "backends": .number(Double(backends)),
        ]))
    }

    // MARK: Output

    func printTable() {
        func f(_ v: JSONValue?, _ digits: Int = 0) -> String {
            guard let d = v?.doubleValue else { return "-" }
            return digits == 0 ? Self.grouped(Int(d.rounded())) : String(format: "%.\(digits)f", d)
        }
        var rows: [[String]] = []
        for r in results {
            let x = r.fields
            switch x["test"]?.stringValue {
            case "enqueue_single":
                rows.append(["enqueue, 1 per call", "\(f(x["jobs_per_s"])) jobs/s", "n=\(f(x["n"])), call p50 \(f(x["p50_ms"], 2)) ms, p99 \(f(x["p99_ms"], 2)) ms"])
            case "enqueue_concurrent":
                rows.append(["enqueue, \(f(x["callers"])) callers at once, 1 per call", "\(f(x["jobs_per_s"])) jobs/s", "n=\(f(x["n"])), call p50 \(f(x["p50_ms"], 2)) ms, p99 \(f(x["p99_ms"], 2)) ms"])
            case "enqueue_bulk":
                rows.append(["enqueue, batches of \(f(x["batch_size"]))", "\(f(x["jobs_per_s"])) jobs/s", "n=\(f(x["n"])), batch p50 \(f(x["p50_ms"], 1)) ms"])
            case "process":
                rows.append(["process, 1 process, c=\(f(x["concurrency"]))\(x["variant"]?.stringValue == "default" ? "" : ", \(f(x["conversations"])) conversations, \(x["variant"]?.stringValue ?? "")")", "\(f(x["jobs_per_s"])) jobs/s",
                             "n=\(f(x["n"])), \(f(x["elapsed_s"], 2)) s, \(f(x["statements_per_job"], 2)) statements and \(f(x["transactions_per_job"], 2)) transactions per job, verified \(x["verified"]?.boolValue == true)"])
            case "process_multi":
                rows.append(["process, \(f(x["processes"])) processes × c=\(f(x["concurrency"]))\(x["variant"]?.stringValue == "default" ? "" : ", \(f(x["conversations"])) conversations, \(x["variant"]?.stringValue ?? "")")", "\(f(x["jobs_per_s"])) jobs/s",
                             "n=\(f(x["n"])), lock waits seen: \(f(x["lock_waits_max"])) at most in \(f(x["lock_samples"])) samples\(Self.waitTypes(x["lock_waits_by_type"])), verified \(x["verified"]?.boolValue == true)"])
            case "pickup_latency":
                rows.append(["pickup latency at \(f(x["rate_per_s"]))/s", "p50 \(f(x["p50_ms"], 1)) / p95 \(f(x["p95_ms"], 1)) / p99 \(f(x["p99_ms"], 1)) ms",
                             "n=\(f(x["n"])), max \(f(x["max_ms"], 1)) ms, achieved \(f(x["achieved_rate_per_s"], 1))/s"])
            case "position", "position_fair":
                rows.append(["position, \(f(x["pending"])) pending\(x["conversations"].map { ", \(f($0)) conversations (fair tags)" } ?? "")", "p50 \(f(x["position_p50_ms"], 2)) / p99 \(f(x["position_p99_ms"], 2)) ms",
                             "lookup by id p50 \(f(x["lookup_p50_ms"], 2)) / p99 \(f(x["lookup_p99_ms"], 2)) ms; count(*) ahead: \(f(x["count_star_ms"], 1)) ms; \(f(x["samples"])) samples"])
            case "memory":
                rows.append(["worker RSS, c=50", "peak \(f(x["peak_rss_mb"], 1)) MB",
                             "n=\(f(x["n"])), first tenth \(f(x["rss_first_tenth_mb"], 1)) MB, last tenth \(f(x["rss_last_tenth_mb"], 1)) MB"])
            case "idle_fleet":
                rows.append(["idle fleet, 20 processes", "\(f(x["transactions_per_s"], 1)) transactions/s", "\(f(x["backends"])) backends"])
            default: break
            }
        }
        print(table(["figure", "value", "details"], rows))
    }

    /// ` (extend ExclusiveLock ×2, …)`: what the waiting locks waited for, or nothing.
    static func waitTypes(_ value: JSONValue?) -> String {
        guard case .object(let o)? = value, !o.isEmpty else { return "" }
        return " (" + o.sorted { $0.key < $1.key }.map { "\($0.key) ×\(Int($0.value.doubleValue ?? 0))" }.joined(separator: ", ") + ")"
    }

    static func grouped(_ v: Int) -> String {
        let s = String(abs(v))
        var out = ""
        for (i, ch) in s.reversed().enumerated() {
            if i > 0 && i % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return (v < 0 ? "-" : "") + String(out.reversed())
    }
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    let rank = Int((p / 100 * Double(sorted.count - 1)).rounded())
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

/// Records which job indexes a no-op handler saw, and when it first saw each.
final class Recorder: @unchecked Sendable {
    private let lock = NSLock()
    private var starts: [Double]
    private var counts: [Int]
    private(set) var firstStart: Date?
    private(set) var lastStart: Date?
    private var seenCount = 0

    init(n: Int) {
        starts = [Double](repeating: 0, count: n)
        counts = [Int](repeating: 0, count: n)
    }

    func record(_ i: Int) {
        let now = Date()
        lock.lock()
        if i >= 0 && i < counts.count {
            if counts[i] == 0 { starts[i] = now.timeIntervalSince1970; seenCount += 1 }
            counts[i] += 1
        }
        if firstStart == nil { firstStart = now }
        lastStart = now
        lock.unlock()
    }

    var seen: Int { lock.lock(); defer { lock.unlock() }; return seenCount }
    var exactlyOnce: Bool { lock.lock(); defer { lock.unlock() }; return counts.allSatisfy { $0 == 1 } }

    func latenciesMs(t0: [Double]) -> [Double] {
        lock.lock()
        defer { lock.unlock() }
        return zip(starts, t0).compactMap { s, t in s > 0 ? (s - t) * 1000 : nil }
    }
}

/// The benchmark's no-op handler (`bench.noop`), in this process or in the drills' worker.
package struct NoopHandler: JobHandler {
    package let kind = "bench.noop"
    let recorder: Recorder?

    package init() { recorder = nil }

    init(recorder: Recorder?) { self.recorder = recorder }

    package func run(_ job: ClaimedJob, context: JobContext) async throws -> JobResult {
        recorder?.record(job.job.params["i"]?.intValue ?? -1)
        return JobResult()
    }
}
