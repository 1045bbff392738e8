import Foundation
import JobEngine
import Postgres
import TestSupport
import Testing

/// The most of one group's jobs whose runs overlap, from the database's own start and finish
/// times (a job admitted under a cap is claimed after the completion that freed its slot
/// committed, so touching intervals do not overlap).
func maxOverlap(_ pool: PGPool, group: UUID) async throws -> Int {
    try await pool.int(
        """
        SELECT coalesce(max(n), 0)::int FROM (
            SELECT (SELECT count(*) FROM jobs o
                    WHERE o.group_id = j.group_id AND o.started_at <= j.started_at AND o.finished_at > j.started_at) AS n
            FROM jobs j WHERE j.group_id = \(group)) x
        """)
}

@Suite("scheduling across a fleet of worker processes", .enabled(if: CLI.isAvailable))
struct SchedulingFleetTests {
    @Test("a cap of 2 never has 3 running in a 4-process × 4-slot fleet; a killed worker's slot comes back after the sweep")
    func capAcrossFleet() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let set = try await cli.run(["limits", "set", "--kind", "test.script", "--per-conversation", "2"])
            #expect(set.status == 0, "\(set.stderr)")
            let capped = UUID(), free = UUID()
            _ = try await queue.submitBatch((0..<24).map { _ in Factory.spec(conversation: capped, params: ["sleep_ms": .number(150)]) }, groupID: capped)
            // A second conversation's jobs run beside the capped one's, up to their own cap.
            _ = try await queue.submitBatch((0..<8).map { _ in Factory.spec(conversation: free, params: ["sleep_ms": .number(150)]) }, groupID: free)
            // Under a cap every job waits for the admitter (none is claimable as submitted).
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE tag IS NULL") == 32)
            let workers = try (0..<4).map { _ in try cli.startDrillWorker(fastWorker + ["--concurrency", "4"]) }
            let done = try await eventually(timeout: .seconds(60)) {
                try await schema.pool.int("SELECT count(*) FROM jobs WHERE status = 'completed'") == 32
            }
            for w in workers { w.terminate() }
            for w in workers { await waitForExit(w) }
            #expect(done)
            let cappedOverlap = try await maxOverlap(schema.pool, group: capped)
            let freeOverlap = try await maxOverlap(schema.pool, group: free)
            // Never more than the cap; how close to it a run gets depends on the machine's load.
            #expect(cappedOverlap <= 2 && freeOverlap <= 2, "at most \(cappedOverlap) and \(freeOverlap) ran at once")
            #expect(cappedOverlap >= 1 && freeOverlap >= 1)

            // kill -9 a worker holding the conversation's only slot (cap 1): the slot is held
            // until the sweep rescues the job, then the next job of the conversation runs.
            _ = try await cli.run(["limits", "set", "--conversation", capped.lowercasedString, "--per-conversation", "1"])
            let crashing = try await queue.submit(Factory.spec(conversation: capped, params: ["hang_ms": .number(60_000), "hang_attempts": .number(1)])).job.id
            let next = try await queue.submit(Factory.spec(conversation: capped)).job.id
            let victim = try cli.startDrillWorker(fastWorker)
            #expect(try await eventually { try await queue.job(crashing).status == .running })
            kill(victim.processIdentifier, SIGKILL)
            await waitForExit(victim)
            #expect(try await queue.position(next).waiting?.reason == .groupCap)
            let survivor = try cli.startDrillWorker(fastWorker)
            let recovered = try await eventually(timeout: .seconds(30)) { try await queue.job(next).status == .completed }
            survivor.terminate()
            await waitForExit(survivor)
            #expect(recovered)
            #expect(try await queue.job(crashing).errors.first?.message.hasPrefix("worker lost") == true)
        }
    }

    @Test("a rate of 5/s never has 6 starts in any 1 s window across two workers; a 429 delays its job without charging a retry")
    func rateAcrossFleet() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let set = try await cli.run(["limits", "set", "--kind", "test.script", "--rate", "5/s"])
            #expect(set.status == 0, "\(set.stderr)")
            let shown = try await cli.run(["limits", "show"])
            #expect(shown.stdout.contains("kind test.script") && shown.stdout.contains("5/1s"))
            let groups = (0..<3).map { _ in UUID() }
            for g in groups {
                _ = try await queue.submitBatch((0..<6).map { _ in Factory.spec(conversation: g) }, groupID: g)
            }
            let deferred = try await queue.submit(Factory.spec(params: ["rate_limited_attempts": .number(1), "retry_after_ms": .number(300)])).job.id
            let workers = try (0..<2).map { _ in try cli.startDrillWorker(fastWorker + ["--concurrency", "4"]) }
            let done = try await eventually(timeout: .seconds(60)) {
                try await schema.pool.int("SELECT count(*) FROM jobs WHERE status = 'completed'") == 19
            }
            for w in workers { w.terminate() }
            for w in workers { await waitForExit(w) }
            #expect(done)
            // Every job's start on the database clock. A job's earlier starts are overwritten
            // (here only the deferred job's first), so this is a lower bound per window; the
            // token log, which has them all, is trimmed once a period old.
            let worstWindow = try await schema.pool.int(
                """
                SELECT max((SELECT count(*) FROM jobs o
                            WHERE o.started_at >= t.started_at AND o.started_at < t.started_at + interval '1 second'))::int
                FROM jobs t WHERE t.started_at IS NOT NULL
                """)
            #expect(worstWindow <= 5)
            let job = try await queue.job(deferred)
            #expect(job.retryCount == 0 && job.attempt == 2)
            #expect(job.errors.first?.message == "429 Too Many Requests")
        }
    }

    @Test("pause stops every worker from starting jobs within a second; resume lets them run; submit --delay and batch --wait")
    func pauseAcrossFleet() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let workers = try (0..<2).map { _ in try cli.startDrillWorker(fastWorker + ["--concurrency", "2"]) }
            defer { for w in workers { w.terminate() } }
            let paused = try await cli.run(["pause", "test.script"])
            #expect(paused.status == 0 && paused.stdout.contains("paused test.script"), "\(paused.stderr)")
            let group = UUID()
            let batch = try await queue.submitBatch((0..<6).map { _ in Factory.spec(conversation: group) }, groupID: group)
            try await Task.sleep(for: .seconds(1.5))
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE started_at IS NOT NULL") == 0)
            let position = try await cli.run(["position", batch.jobIDs[0].lowercasedString, "--json"])
            #expect(position.stdout.contains("\"reason\":\"paused\""), "\(position.stdout)")
            let waiter = Task { try await cli.run(["batch", batch.batchID.lowercasedString, "--wait", "--json"]) }
            let resumed = try await cli.run(["resume", "test.script"])
            #expect(resumed.status == 0, "\(resumed.stderr)")
            let waited = try await waiter.value
            #expect(waited.status == 0, "\(waited.stderr)")
            #expect(waited.stdout.contains("\"finished_at\""))
            #expect(try await queue.batch(batch.batchID).isFinished)

            // A delayed image-style submit from the CLI waits, then runs at its time.
            let delayed = try await cli.run(["submit", "--conversation", UUID().lowercasedString, "--prompt", "later", "--delay", "1s", "--json"])
            #expect(delayed.status == 0, "\(delayed.stderr)")
            let bad = try await cli.run(["submit", "--conversation", UUID().lowercasedString, "--prompt", "x", "--delay", "soon"])
            #expect(bad.status == 64 && bad.stderr.contains("--delay"))
            let badRate = try await cli.run(["limits", "set", "--kind", "test.script", "--rate", "lots"])
            #expect(badRate.status == 64 && badRate.stderr.contains("--rate"))
            let badCap = try await cli.run(["limits", "set", "--per-conversation", "0"])
            #expect(badCap.status == 64 && badCap.stderr.contains("1–100000"))
            #expect(try await queue.schedulingSettings().limits.isEmpty)
        }
    }
}
