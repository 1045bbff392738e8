import Foundation
import JobEngine
import Postgres
import TestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@Suite("operators' commands: report, prune, metrics", .enabled(if: CLI.isAvailable))
struct OperatorCommandTests {
    @Test("report --json parses and matches the views row for row; --csv and tables print the same rows")
    func reportMatchesViews() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let conversation = UUID()
            let batch = try await queue.submitBatch((0..<6).map { i in
                Factory.spec(conversation: conversation, priority: [.high, .normal, .low][i % 3])
            }, groupID: conversation)
            try await schema.pool.query("""
                UPDATE jobs SET status = 'completed', attempt = 1, started_at = created_at + interval '2 seconds',
                                finished_at = created_at + interval '5 seconds'
                WHERE id = ANY(\(Array(batch.jobIDs.prefix(3)))::uuid[])
                """)
            try await schema.pool.query("""
                UPDATE jobs SET status = 'error', attempt = 1, started_at = now(), finished_at = now(), error_message = 'prompt rejected',
                                errors = jsonb_build_array(jsonb_build_object('attempt', 1, 'at', now(), 'message', 'prompt rejected',
                                                                              'retried', false, 'timed_out', false))
                WHERE id = \(batch.jobIDs[3])
                """)

            let r = try await cli.run(["report", "--json", "--since", "2h"])
            #expect(r.status == 0, "\(r.stderr)")
            guard case .object(let top) = try JSONValue.parse(r.stdout), case .object(let sections)? = top["sections"] else {
                Issue.record("report --json is not an object with sections: \(r.stdout.prefix(200))")
                return
            }
            #expect(top["window_s"]?.doubleValue == 7200)
            let names = ["depth", "oldest", "throughput", "latency", "failures", "retries", "conversations", "batches", "workers"]
            #expect(Set(sections.keys) == Set(names))
            let views = ["report_queue_depth", "report_oldest_pending", "report_throughput", "report_latency", "report_top_failures",
                         "report_retries", "report_conversations", "report_batches", "report_workers"]
            for (name, view) in zip(names, views) {
                let rows = try await schema.pool.withTransaction { conn in
                    try await conn.query("SELECT set_config('imagejobs.report_window', '2 hours', true)")
                    return try await conn.query("SELECT * FROM \(identifier: view)")
                }
                guard case .array(let printed)? = sections[name] else {
                    Issue.record("\(name) is not an array")
                    continue
                }
                #expect(printed.count == rows.count, "\(name)")
                for (row, item) in zip(rows, printed) {
                    for (i, column) in rows.columns.names.enumerated() {
                        if column.hasSuffix("_age_s") || column == "seen_s_ago" {
                            // Ages count from each read's now(): equal up to the time between the reads.
                            let a = try row.decode(i, as: Double?.self), b = item[column]?.doubleValue
                            #expect(a == nil ? b == nil : abs(a! - (b ?? .nan)) < 30, "\(name).\(column)")
                            continue
                        }
                        #expect(sameValue(row, i, item[column]), "\(name).\(column): \(String(describing: item[column]))")
                    }
                }
            }
            // Spot checks that the figures are the data's, not just self-consistent.
            guard case .array(let throughput)? = sections["throughput"], case .array(let batches)? = sections["batches"] else { return }
            let completed = throughput.compactMap { $0["completed"]?.doubleValue }.reduce(0, +)
            #expect(completed == 3)
            #expect(batches.first?["done_fraction"]?.doubleValue.map { abs($0 - 4.0 / 6) < 0.001 } == true)

            let csv = try await cli.run(["report", "depth", "failures", "--csv"])
            #expect(csv.status == 0, "\(csv.stderr)")
            let blocks = csv.stdout.trimmingCharacters(in: .newlines).components(separatedBy: "\n\n")
            #expect(blocks.count == 2)
            #expect(blocks[0].split(separator: "\n").first == "status,priority,jobs,capped")
            #expect(blocks[0].split(separator: "\n").count == 7)
            #expect(blocks[1].contains("prompt rejected,1,1,0,"))
            let tables = try await cli.run(["report", "batches"])
            #expect(tables.stdout.contains("Batches (last 1h)") && tables.stdout.contains(batch.batchID.uuidString.lowercased()))
            #expect(!tables.stdout.contains("prompt \""))
        }
    }

    @Test("prune --dry-run counts, prune deletes; bad ages and sections are refused")
    func pruneAndBadInput() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let ids = try await (0..<5).asyncMap { _ in try await queue.submit(Factory.spec()).job.id }
            try await JobFactory(schema.pool).finish(Array(ids.prefix(3)), as: .cancelled, ago: .seconds(10 * 86_400))
            let dry = try await cli.run(["prune", "--older-than", "7d", "--dry-run", "--json"])
            #expect(dry.status == 0, "\(dry.stderr)")
            #expect(dry.stdout.contains("\"jobs\":3") && dry.stdout.contains("\"dry_run\":true"))
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 5)
            let real = try await cli.run(["prune", "--older-than", "7d"])
            #expect(real.status == 0 && real.stdout.hasPrefix("deleted 3 finished jobs older than 7d"), "\(real.stdout) \(real.stderr)")
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 2)

            let cases: [([String], String)] = [
                (["prune", "--older-than", "7x"], "is not an age"),
                (["prune", "--older-than=-1d"], "is not an age"),
                (["prune", "--older-than", "7d", "--batch", "0"], "--batch must be"),
                (["report", "--since", "soon"], "is not an age"),
                (["report", "nosuch"], "unknown section"),
                (["report", "--json", "--csv"], "exclude each other"),
                (["worker", "--retention", "forever"], "is not an age"),
                (["worker", "--metrics-port", "70000"], "--metrics-port must be"),
            ]
            for (args, message) in cases {
                let r = try await cli.run(args)
                #expect(r.status == 64, "\(args): \(r.stderr)")
                #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 2)
        }
    }

    @Test("worker --no-maintenance leaves a lost worker's job alone; maintain --once rescues it and prunes; bad flags are refused")
    func maintainApartFromWorkers() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let lost = try await queue.submit(Factory.spec(kind: "nobody.runs")).job.id
            let old = try await queue.submit(Factory.spec(kind: "nobody.runs")).job.id
            // A job a crashed worker held, its heartbeat long gone; a job finished a month ago.
            let factory = JobFactory(schema.pool)
            try await factory.run([lost], worker: "crashed", heartbeatAgo: .seconds(600))
            try await factory.finish([old], as: .cancelled, ago: .seconds(30 * 86_400))

            // Several sweep intervals of a worker that takes no part in maintenance.
            let worker = try cli.start(fastWorker + ["--no-maintenance"])
            let registered = try await eventually { try await schema.pool.int("SELECT count(*) FROM workers") == 1 }
            try await Task.sleep(for: .seconds(1))
            worker.terminate()
            await waitForExit(worker)
            #expect(registered && worker.terminationStatus == 0)
            #expect(try await queue.job(lost).status == .running)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE id = \(old)") == 1)

            // (A short lease: staleness counts from the server's start too, and a cluster started
            // moments ago would make a 10-minute-old heartbeat look fresh under a long one.)
            let round = try await cli.run(["maintain", "--once", "--json", "--lease", "2", "--retention", "7d"])
            #expect(round.status == 0, "\(round.stderr)")
            let report = try JSONValue.parse(round.stdout)
            #expect(report["led"] == true && report["rescued"] == 1 && report["pruned"]?["jobs"] == 1, "\(round.stdout)")
            let rescued = try await queue.job(lost)
            #expect(rescued.status == .pending && rescued.retryCount == 1)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE id = \(old)") == 0)

            for (args, message) in [
                (["maintain", "--once", "--retention", "forever"], "is not an age"),
                (["maintain", "--once", "--lease", "0"], "--lease must be"),
                (["worker", "--no-maintenance", "--sweep-interval=-1"], "--sweep-interval must be"),
            ] {
                let r = try await cli.run(args)
                #expect(r.status == 64 && r.stderr.contains(message), "\(args): \(r.stderr)")
            }
        }
    }

    @Test("a worker's /metrics after a few jobs: counters, histograms and queue depth match the jobs table")
    func metricsScrape() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let port = try freePort()
            let ok = try await (0..<5).asyncMap { _ in try await queue.submit(Factory.spec(params: ["sleep_ms": 10])).job.id }
            let flaky = try await queue.submit(Factory.spec(params: ["fail_attempts": 1])).job.id
            let poison = try await queue.submit(Factory.spec(params: ["permanent": true])).job.id
            let slow = try await queue.submit(Factory.spec(params: ["sleep_ms": 10_000], timeout: .seconds(1))).job.id
            _ = try await queue.submit(Factory.spec(kind: "other.kind"))  // nobody runs it: stays pending
            let handled = ok + [flaky, poison, slow]
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("imagejobs-metrics-\(UUID()).log")
            defer { try? FileManager.default.removeItem(at: log) }
            let worker = try cli.startDrillWorker(fastWorker + ["--concurrency", "4", "--metrics-port", "\(port)",
                                                     "--metrics-host", "127.0.0.1", "--queue-depth-interval", "0.2"], stderr: log)
            defer { worker.terminate() }
            let workerLog = { String((try? String(contentsOf: log, encoding: .utf8))?.suffix(2000) ?? "") }
            #expect(try await eventually {
                try await schema.pool.int("SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL") == handled.count
            }, "the worker's stderr: \(workerLog())")
            let truth = try await schema.pool.query("""
                SELECT (SELECT sum(attempt) FROM jobs WHERE kind = 'test.script') AS claimed,
                       (SELECT count(*) FROM jobs WHERE status = 'completed') AS completed,
                       (SELECT coalesce(sum(jsonb_array_length(errors)), 0) FROM jobs) AS failed,
                       (SELECT count(*) FROM jobs, jsonb_array_elements(errors) e WHERE (e->>'retried')::boolean) AS retried,
                       (SELECT count(*) FROM jobs, jsonb_array_elements(errors) e WHERE (e->>'timed_out')::boolean) AS timed_out,
                       (SELECT count(*) FROM jobs WHERE status = 'pending') AS pending
                """)[0]
            let want: [String: Int] = [
                "imagejobs_jobs_claimed_total": try truth.decode("claimed"),
                "imagejobs_jobs_completed_total": try truth.decode("completed"),
                "imagejobs_jobs_failed_total": try truth.decode("failed"),
                "imagejobs_jobs_retried_total": try truth.decode("retried"),
                "imagejobs_jobs_timed_out_total": try truth.decode("timed_out"),
                "imagejobs_jobs_rescued_total": 0,
                "imagejobs_stale_writes_rejected_total": 0,
                "imagejobs_queue_depth{status=\"pending\",priority=\"normal\"}": try truth.decode("pending"),
                "imagejobs_queue_depth{status=\"running\",priority=\"normal\"}": 0,
                "imagejobs_handler_duration_seconds_count{kind=\"test.script\"}": try truth.decode("claimed"),
                "imagejobs_queue_wait_seconds_count{kind=\"test.script\"}": try truth.decode("claimed"),
                "imagejobs_worker_free_slots": 4,
                "imagejobs_worker_running_jobs": 0,
            ]
            #expect(want["imagejobs_jobs_claimed_total"] == 9 && want["imagejobs_jobs_failed_total"] == 3)
            #expect(want["imagejobs_jobs_retried_total"] == 1 && want["imagejobs_jobs_timed_out_total"] == 1)
            var metrics: [String: Double] = [:]
            let matched = try await eventually(timeout: .seconds(10)) {
                metrics = (try? await scrape(port)) ?? [:]
                return want.allSatisfy { metrics[$0.key] == Double($0.value) }
            }
            #expect(matched, "\(want.filter { metrics[$0.key] != Double($0.value) }.map { "\($0.key): want \($0.value), got \(String(describing: metrics[$0.key]))" })")
            #expect(metrics.keys.contains { $0.hasPrefix("imagejobs_handler_duration_seconds_bucket{") })
            #expect(metrics["imagejobs_db_reconnects_total"] == 0)
            worker.terminate()
            await waitForExit(worker)
            #expect(worker.terminationStatus == 0, "the worker's stderr: \(workerLog())")
        }
    }
}

/// Scrapes `/metrics` into `name{labels}` → value.
func scrape(_ port: Int) async throws -> [String: Double] {
    let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
    guard (response as? HTTPURLResponse)?.statusCode == 200 else { return [:] }
    var out: [String: Double] = [:]
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        out[String(line[..<space])] = value
    }
    return out
}

/// A TCP port nothing listens on right now, below the kernel's ephemeral range (read from
/// `ip_local_port_range`) and below the local clusters' ports (5432x–5632x). A port the kernel
/// handed out with port 0 comes from that range, where every outgoing connection of the
/// parallel tests also takes its local port, so one could take it before the worker binds it
/// (CI saw the worker exit "cannot listen").
func freePort() throws -> Int {
    let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
        .split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) }
    let ceiling = min(range?.first ?? 32768, 54000)
    for _ in 0..<100 {
        let port = Int.random(in: 20000..<ceiling)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        if bound { return port }
    }
    throw POSIXError(.EADDRINUSE)
}

/// Whether a printed JSON value is the view's cell: numbers as numbers, booleans, NULL as
/// null, timestamps as the same instant, everything else as its text.
func sameValue(_ row: PGRow, _ i: Int, _ printed: JSONValue?) -> Bool {
    guard let printed else { return false }
    guard let text = try? row.decode(i, as: String?.self) else { return printed == .null }
    switch row.columns.types[i] {
    case PGType.int2, PGType.int4, PGType.int8, PGType.float4, PGType.float8, PGType.numeric:
        return printed.doubleValue.map { abs($0 - (Double(text) ?? .nan)) < 1e-9 } ?? false
    case PGType.bool:
        return printed == .bool(text == "t")
    case PGType.timestamptz:
        guard let date = try? row.decode(i, as: Date.self), let s = printed.stringValue else { return false }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: s).map { abs($0.timeIntervalSince(date)) < 0.001 } ?? false
    case 1009:
        return printed == .array(((try? row.decode(i, as: [String].self)) ?? []).map(JSONValue.string))
    default:
        return printed.stringValue == text
    }
}
