import Foundation
import JobEngine
import Postgres
import TestSupport
import Testing

/// The reporting views (migration 0006) against a seeded data set whose expected figures the
/// test computes itself, from the seed, not from SQL.
@Suite("reporting views", .enabled(if: TestDatabase.isConfigured))
struct ReportingTests {
    @Test("each view returns the seeded data set's figures: counts, minutes, percentiles, failures, states")
    func viewsMatchSeed() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            let seed = try await ReportSeed.insert(schema.pool)
            let t0 = seed.now

            // Queue depth: pending and running × priority, zeros included; nothing held past the cap.
            let depth = try await readView(schema.pool, "report_queue_depth")
            #expect(depth.count == 6)
            for row in depth {
                let status: String = try row.decode("status"), priority: String = try row.decode("priority")
                #expect(["pending", "running"].contains(status))
                let want = seed.jobs.filter { $0.status == status && $0.priority == priority }.count
                #expect(try row.decode("jobs", as: Int.self) == want, "\(status)/\(priority)")
                #expect(try row.decode("capped", as: Bool.self) == false)
            }

            // Oldest pending per priority.
            for row in try await readView(schema.pool, "report_oldest_pending") {
                let priority: String = try row.decode("priority")
                let pending = seed.jobs.filter { $0.status == "pending" && $0.priority == priority }
                #expect(try row.decode("pending", as: Int.self) == pending.count, "\(priority)")
                #expect(try row.decode("ready", as: Int.self) == pending.filter { $0.nextAttempt <= 0 }.count, "\(priority)")
                if let oldest = pending.map(\.created).min() {
                    let got: Date = try row.decode("oldest_created_at")
                    #expect(abs(got.timeIntervalSince(t0.addingTimeInterval(oldest))) < 0.001)
                    #expect(try row.decode("oldest_age_s", as: Double.self) >= -oldest)
                } else {
                    #expect(row.isNull("oldest_created_at"))
                }
            }

            // Throughput per minute over the default window (1 h).
            let windowStart = -3600.0
            var minutes: [Int: [String: Int]] = [:]
            func bump(_ offset: Double, _ key: String) {
                let minute = Int((t0.timeIntervalSince1970 + offset) / 60) * 60
                minutes[minute, default: [:]][key, default: 0] += 1
            }
            for job in seed.jobs {
                if let f = job.finished, f >= windowStart, job.status == "completed" || job.status == "error" { bump(f, job.status) }
                guard job.finished.map({ $0 >= windowStart }) ?? true else { continue }
                for e in job.errors where e.at >= windowStart {
                    if e.retried { bump(e.at, "retried") }
                    if e.timedOut { bump(e.at, "timed_out") }
                }
            }
            let throughput = try await readView(schema.pool, "report_throughput")
            #expect(throughput.count == minutes.count)
            for row in throughput {
                let minute = Int(try row.decode("minute", as: Date.self).timeIntervalSince1970.rounded())
                let want = minutes[minute] ?? [:]
                for key in ["completed", "error", "retried", "timed_out"] {
                    #expect(try row.decode(key, as: Int.self) == want[key] ?? 0, "\(minute) \(key)")
                }
            }
            #expect(minutes.values.map { $0["timed_out"] ?? 0 }.reduce(0, +) > 0)
            #expect(minutes.values.map { $0["retried"] ?? 0 }.reduce(0, +) > 0)

            // Queue wait and run time percentiles per priority (percentile_cont, computed here).
            let latency = try await readView(schema.pool, "report_latency")
            #expect(latency.count == 3)
            for row in latency {
                let priority: String = try row.decode("priority")
                let finished = seed.jobs.filter {
                    $0.priority == priority && ($0.status == "completed" || $0.status == "error")
                        && ($0.finished ?? -1e9) >= windowStart && $0.started != nil
                }
                #expect(try row.decode("jobs", as: Int.self) == finished.count)
                let waits = finished.map { $0.started! - $0.nextAttempt }
                let runs = finished.map { $0.finished! - $0.started! }
                for (p, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
                    #expect(abs(try row.decode("wait_\(name)_s", as: Double.self) - percentileCont(waits, p)) < 1e-4, "\(priority) wait \(name)")
                    #expect(abs(try row.decode("run_\(name)_s", as: Double.self) - percentileCont(runs, p)) < 1e-4, "\(priority) run \(name)")
                }
            }

            // Top failure messages in the window.
            var failures: [String: (attempts: Int, jobs: Set<UUID>, retried: Int)] = [:]
            for job in seed.jobs where job.finished.map({ $0 >= windowStart }) ?? true {
                for e in job.errors where e.at >= windowStart {
                    var f = failures[e.message] ?? (0, [], 0)
                    f.attempts += 1
                    f.jobs.insert(job.id)
                    if e.retried { f.retried += 1 }
                    failures[e.message] = f
                }
            }
            let top = try await readView(schema.pool, "report_top_failures")
            #expect(top.count == failures.count)
            #expect(!failures.keys.contains("an old failure"))
            var previous = Int.max
            for row in top {
                let message: String = try row.decode("message")
                let want = try #require(failures[message], "\(message)")
                let attempts: Int = try row.decode("attempts")
                #expect(attempts == want.attempts && attempts <= previous)
                previous = attempts
                #expect(try row.decode("jobs", as: Int.self) == want.jobs.count)
                #expect(try row.decode("retried", as: Int.self) == want.retried)
            }

            // Jobs with failed attempts.
            let windowJobs = seed.jobs.filter { $0.finished.map { $0 >= windowStart } ?? true }
            let retried = try await readView(schema.pool, "report_retries")
            let wantRetried = windowJobs.filter { !$0.errors.isEmpty }
            #expect(Set(try retried.map { try $0.decode("job_id", as: UUID.self) }) == Set(wantRetried.map(\.id)))
            for row in retried {
                let job = try #require(seed.jobs.first { $0.id == (try? row.decode("job_id", as: UUID.self)) })
                #expect(try row.decode("retry_count", as: Int.self) == job.retryCount)
                #expect(try row.decode("last_error", as: String.self) == job.errors.last?.message)
            }

            // Conversations and batches of the window.
            let conversations = try await readView(schema.pool, "report_conversations")
            #expect(conversations.count == Set(windowJobs.map(\.conversation)).count)
            for row in conversations {
                let c: UUID = try row.decode("conversation_id")
                let mine = windowJobs.filter { $0.conversation == c }
                #expect(try row.decode("jobs", as: Int.self) == mine.count)
                for s in ["pending", "running", "completed", "error", "cancelled"] {
                    #expect(try row.decode(s, as: Int.self) == mine.filter { $0.status == s }.count, "\(c) \(s)")
                }
            }
            let batches = try await readView(schema.pool, "report_batches")
            #expect(try batches.map { try $0.decode("batch_id", as: UUID.self) } == [seed.liveBatch])
            let b = batches[0]
            let inBatch = seed.jobs.filter { $0.batch == seed.liveBatch }
            #expect(try b.decode("job_count", as: Int.self) == inBatch.count)
            for s in ["pending", "running", "completed", "error", "cancelled"] {
                #expect(try b.decode(s, as: Int.self) == inBatch.filter { $0.status == s }.count, "batch \(s)")
            }
            let done = Double(inBatch.filter { $0.finished != nil }.count) / Double(inBatch.count)
            #expect(abs(try b.decode("done_fraction", as: Double.self) - done) < 0.0001)
            #expect(b.isNull("finished_at"))

            // Workers: live, stopped, dead; the jobs each holds.
            let workers = try await readView(schema.pool, "report_workers")
            var states: [String: String] = [:]
            for row in workers { states[try row.decode("worker_id")] = try row.decode("state", as: String.self) }
            #expect(states == ["w-live": "live", "w-stopped": "stopped", "w-dead": "dead"])
            let live = try #require(workers.first { (try? $0.decode("worker_id", as: String.self)) == "w-live" })
            #expect(try live.decode("running_jobs", as: Int.self) == seed.jobs.filter { $0.status == "running" }.count)

            // A wider window takes in the old jobs.
            let wide = try await readView(schema.pool, "report_throughput", window: "3 hours")
            let total = try wide.map { try $0.decode("completed", as: Int.self) }.reduce(0, +)
            #expect(total == seed.jobs.filter { $0.status == "completed" }.count)
        }
    }

    @Test("no report view reads every job: each is answered from counts, partial indexes and bounded samples on a busy queue's table")
    func indexed() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            try await QueryPlans.seedBusyQueue(schema.pool)
            for view in ReportingTests.views {
                let plan = try await QueryPlans.plan(PGQuery(unsafeSQL: "SELECT * FROM \(view)"), pool: schema.pool)
                #expect(!QueryPlans.scans(plan, table: "jobs"), "\(view): \(plan.joined(separator: "\n"))")
            }
        }
    }

    static let views = [
        "report_batches", "report_conversations", "report_latency", "report_oldest_pending", "report_queue_depth",
        "report_retries", "report_throughput", "report_top_failures", "report_workers",
    ]

    @Test("the reporting role reads every report view and nothing else")
    func reporterReadsViewsOnly() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            let rows = try await schema.pool.query("""
                SELECT c.relname AS name, c.relkind::text AS kind,
                       has_table_privilege('imagejobs_reporter', c.oid, 'SELECT') AS can_select,
                       has_any_column_privilege('imagejobs_reporter', c.oid, 'SELECT') AS any_column
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'p')
                ORDER BY 1
                """)
            let views = ReportingTests.views
            var readable: [String] = []
            for row in rows where try row.decode("can_select", as: Bool.self) || row.decode("any_column", as: Bool.self) {
                readable.append(try row.decode("name"))
            }
            #expect(readable == views)
            #expect(rows.count > views.count + 5)
            // It really reads each of them as that role, and cannot run the pruner.
            for view in views { _ = try await readView(schema.pool, view) }
            let prune = try await schema.pool.scalar(
                "SELECT has_function_privilege('imagejobs_reporter', 'prune_finished(interval, integer, boolean)', 'EXECUTE')", as: Bool.self)
            #expect(prune == false)
            // No view exposes a job's parameters or an image.
            let columns = try await schema.pool.query("""
                SELECT table_name, column_name FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = ANY(\(views)::text[])
                """)
            let names = try columns.map { try $0.decode("column_name", as: String.self) }
            #expect(!names.contains("params") && !names.contains("bytes") && !names.contains("prompt"))
        }
    }
}

/// Reads a view as the reporting role, optionally with another window.
func readView(_ pool: PGPool, _ view: String, window: String? = nil) async throws -> PGRows {
    try await pool.withTransaction { conn in
        try await conn.query("SET LOCAL ROLE imagejobs_reporter")
        if let window { try await conn.query("SELECT set_config('imagejobs.report_window', \(window), true)") }
        return try await conn.query("SELECT * FROM \(identifier: view)")
    }
}

/// PostgreSQL's `percentile_cont`: linear interpolation between the closest ranks.
func percentileCont(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    let position = p * Double(sorted.count - 1)
    let lo = Int(position.rounded(.down)), hi = Int(position.rounded(.up))
    return sorted[lo] + (position - Double(lo)) * (sorted[hi] - sorted[lo])
}

/// A seeded data set written straight into `jobs`, `batches` and `workers`; every time is an
/// offset in seconds from `now` (the database clock when seeding).
struct ReportSeed {
    struct AttemptError {
        var attempt: Int
        var at: Double
        var message: String
        var retried: Bool
        var timedOut: Bool
    }
    struct SeedJob {
        var id = UUID()
        var conversation: UUID
        var batch: UUID?
        var priority: String
        var status: String
        var created: Double
        var nextAttempt: Double
        var started: Double?
        var finished: Double?
        var attempt: Int
        var retryCount: Int
        var errors: [AttemptError] = []
        var worker: String?
    }

    var now: Date
    var jobs: [SeedJob]
    var liveBatch: UUID

    static func insert(_ pool: PGPool) async throws -> ReportSeed {
        let now: Date = try await pool.scalar("SELECT date_trunc('milliseconds', now())", as: Date.self)
        var rng = SeededRandom(seed: 42)
        let conversations = (0..<4).map { _ in UUID() }
        let liveBatch = UUID(), oldBatch = UUID()
        let priorities = ["high", "normal", "low"]
        var jobs: [SeedJob] = []
        // 60 jobs finished in the window, with waits and run times to take percentiles of.
        for i in 0..<60 {
            let created = -3000.0 + Double(i) * 40
            let retriedOnce = i % 4 == 1
            let next = retriedOnce ? created + 5 : created
            let wait = (Double(Int.random(in: 10...30_000, using: &rng))) / 1000
            let run = (Double(Int.random(in: 100...20_000, using: &rng))) / 1000
            let started = next + wait, finished = started + run
            var job = SeedJob(conversation: conversations[i % 3], priority: priorities[i % 3], status: i % 5 == 0 ? "error" : "completed",
                              created: created, nextAttempt: next, started: started, finished: finished,
                              attempt: retriedOnce ? 2 : 1, retryCount: retriedOnce ? 1 : 0)
            if retriedOnce { job.errors.append(.init(attempt: 1, at: created + 4, message: "backend returned HTTP 503", retried: true, timedOut: false)) }
            if job.status == "error" {
                let timedOut = i % 10 == 0
                job.errors.append(.init(attempt: job.attempt, at: finished, message: timedOut ? "timed out after 300 s" : "prompt rejected",
                                        retried: false, timedOut: timedOut))
            }
            jobs.append(job)
        }
        // Finished two hours ago: outside the default window.
        for i in 0..<5 {
            var job = SeedJob(conversation: conversations[3], batch: oldBatch, priority: "normal", status: "completed", created: -7300,
                              nextAttempt: -7290, started: -7280, finished: -7200 + Double(i), attempt: 2, retryCount: 1)
            job.errors.append(.init(attempt: 1, at: -7295, message: "an old failure", retried: true, timedOut: false))
            jobs.append(job)
        }
        // Pending: ready ones, and two waiting for a retry.
        for i in 0..<7 {
            var job = SeedJob(conversation: conversations[i % 2], batch: i == 0 ? liveBatch : nil, priority: priorities[i % 3], status: "pending",
                              created: -900 + Double(i) * 60, nextAttempt: i >= 5 ? 600 : -900 + Double(i) * 60, attempt: i >= 5 ? 1 : 0,
                              retryCount: i >= 5 ? 1 : 0)
            if i >= 5 { job.errors.append(.init(attempt: 1, at: -30, message: "backend returned HTTP 503", retried: true, timedOut: false)) }
            jobs.append(job)
        }
        // Running on the live worker; cancelled in the window.
        for i in 0..<3 {
            jobs.append(SeedJob(conversation: conversations[0], batch: i == 0 ? liveBatch : nil, priority: priorities[i], status: "running",
                                created: -200, nextAttempt: -200, started: -100, attempt: 1, retryCount: 0, worker: "w-live"))
        }
        for _ in 0..<2 {
            jobs.append(SeedJob(conversation: conversations[1], priority: "low", status: "cancelled", created: -400, nextAttempt: -400,
                                finished: -300, attempt: 0, retryCount: 0))
        }
        // Two more finished jobs in the live batch.
        for i in [0, 4] { jobs[i].batch = liveBatch; jobs[i].conversation = conversations[0] }

        let isoFormatter = ISO8601DateFormatter()
        isoFormatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        try await pool.withTransaction { conn in
            for (batch, conversation) in [(liveBatch, conversations[0]), (oldBatch, conversations[3])] {
                let count = jobs.filter { $0.batch == batch }.count
                try await conn.query("""
                    INSERT INTO batches (id, group_id, job_count, created_at, finished_at)
                    VALUES (\(batch), \(conversation), \(count), \(now)::timestamptz - interval '3 hours',
                            \(batch == oldBatch ? now.addingTimeInterval(-7196) : nil))
                    """)
            }
            for j in jobs {
                func at(_ offset: Double?) -> Date? { offset.map { now.addingTimeInterval($0) } }
                let errors = JSONValue.array(j.errors.map { (e: AttemptError) -> JSONValue in
                    .object(["attempt": .number(Double(e.attempt)), "at": .string(isoFormatter.string(from: now.addingTimeInterval(e.at))),
                             "message": .string(e.message), "worker": .string("w-old"), "retried": .bool(e.retried),
                             "timed_out": .bool(e.timedOut)])
                }).jsonText
                try await conn.query("""
                    INSERT INTO jobs (id, group_id, batch_id, kind, params, priority, status, retry_count, next_attempt_at,
                                      attempt, worker_id, created_at, started_at, heartbeat_at, deadline_at, finished_at,
                                      error_message, errors)
                    VALUES (\(j.id), \(j.conversation), \(j.batch), 'image.generate', '{"prompt":"secret prompt"}',
                            \(j.priority)::job_priority, \(j.status)::job_status, \(j.retryCount), \(at(j.nextAttempt)),
                            \(j.attempt), \(j.worker), \(at(j.created)), \(at(j.started)),
                            \(j.status == "running" ? at(-1) : nil), \(j.status == "running" ? at(200) : nil), \(at(j.finished)),
                            \(j.status == "error" ? j.errors.last?.message : nil), \(errors)::jsonb)
                    """)
            }
            // The completion counts the count trigger keeps when a job completes (the rows above
            // were inserted finished, so it never saw them complete).
            try await conn.query("""
                INSERT INTO job_count_deltas (metric, priority, second, n)
                SELECT 1, priority, date_trunc('second', finished_at), count(*) FROM jobs WHERE status = 'completed' GROUP BY 2, 3
                """)
            try await conn.query("""
                INSERT INTO workers (id, host, pid, concurrency, kinds, started_at, last_seen_at, stopped_at) VALUES
                ('w-live', 'h1', 1, 4, '{image.generate}', \(now)::timestamptz - interval '1 hour', \(now)::timestamptz, NULL),
                ('w-stopped', 'h2', 2, 4, '{image.generate}', \(now)::timestamptz - interval '1 hour', \(now)::timestamptz - interval '10 minutes', \(now)::timestamptz - interval '10 minutes'),
                ('w-dead', 'h3', 3, 4, '{image.generate}', \(now)::timestamptz - interval '1 hour', \(now)::timestamptz - interval '5 minutes', NULL)
                """)
        }
        return ReportSeed(now: now, jobs: jobs, liveBatch: liveBatch)
    }
}

