import Foundation
import Postgres
import TestSupport
import Testing

@testable import JobEngine

/// Runs admission rounds until one admits nothing (as the elected admitter would, ten a second).
@discardableResult
func admitAll(_ pool: PGPool) async throws -> Int {
    let admitter = Maintenance(pool: pool, logger: TestLog.quiet)
    var total = 0
    while let round = try await admitter.admit(), round.admitted > 0 { total += round.admitted }
    return total
}

@Suite("scheduling: fair share, delays, caps, rate limits, pauses, batch completion", .enabled(if: TestDatabase.isConfigured))
struct SchedulingTests {
    @Test("a new conversation lands among the active conversations, not behind a 10,000-job batch; strict order puts it last")
    func fairShareNewcomer() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let big = UUID()
            let batch = try await queue.submitBatch((0..<10_000).map { _ in Factory.spec(conversation: big) }, groupID: big)
            let small = UUID()
            _ = try await queue.submit(Factory.spec(conversation: small))
            let newcomer = try await queue.submit(Factory.spec()).job.id
            let p = try await queue.position(newcomer)
            // Two other conversations are active: at most one turn of each is ahead.
            #expect(p.position! <= 2)
            #expect(p.position == (try await queue.positionByCounting(newcomer)).position)
            // The claim agrees: the newcomer is among the first three claimed, and the big
            // batch's own jobs come out oldest first.
            let first = try await claim(schema.pool, limit: 3).map(\.id)
            #expect(first.contains(newcomer))
            let bigClaimed = try await claim(schema.pool, limit: 20).map(\.id)
            #expect(bigClaimed == Array(batch.jobIDs.filter { !first.contains($0) }.prefix(20)))

            try await queue.setFairShare(false)
            let late = try await queue.submit(Factory.spec()).job.id
            let pending = try await schema.pool.int("SELECT count(*) FROM jobs WHERE status = 'pending'")
            #expect(try await queue.position(late).position == pending - 1)
        }
    }

    @Test("a weight of 3 gets three turns for every one of weight 1")
    func weights() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let heavy = UUID(), light = UUID()
            try await queue.setLimits(.group(heavy), weight: .set(3))
            _ = try await queue.submitBatch((0..<30).map { _ in Factory.spec(conversation: heavy) }, groupID: heavy)
            _ = try await queue.submitBatch((0..<30).map { _ in Factory.spec(conversation: light) }, groupID: light)
            let first = Set(try await claim(schema.pool, limit: 20).map(\.id))
            let heavyClaimed = try await schema.pool.int("SELECT count(*) FROM jobs WHERE group_id = \(heavy) AND status = 'running'")
            #expect(first.count == 20)
            // 15 and 5 with whole turns; the groups' phases shift a turn either way.
            #expect((13...17).contains(heavyClaimed))
        }
    }

    @Test("a delayed job is not claimable before its time, says so, and is admitted once due; run_at through SQL too")
    func delayedJobs() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let runAt = Date().addingTimeInterval(1.5)
            var spec = Factory.spec()
            spec.runAt = runAt
            let id = try await queue.submit(spec).job.id
            let p = try await queue.position(id)
            #expect(p.position == nil && p.waiting?.reason == .scheduled)
            #expect(abs(p.waiting!.until!.timeIntervalSince(runAt)) < 0.01)
            #expect(try await admitAll(schema.pool) == 0)
            #expect(try await claim(schema.pool).isEmpty)
            #expect(try await eventually(timeout: .seconds(10)) { try await admitAll(schema.pool) == 1 })
            #expect(try await queue.position(id).position == 0)
            let started = try await claim(schema.pool)
            #expect(started.map(\.id) == [id])
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE id = \(id) AND started_at >= next_attempt_at") == 1)

            // Through SQL, in a batch: the delayed item waits, the others are queued at once.
            let group = UUID().lowercasedString
            let later = ISO8601DateFormatter().string(from: Date().addingTimeInterval(3600))
            let rows = try await schema.pool.query(
                """
                SELECT unnest(job_ids) AS id FROM submit_jobs(\(
                    "[{\"kind\": \"test.script\", \"group_id\": \"\(group)\"}, {\"kind\": \"test.script\", \"group_id\": \"\(group)\", \"run_at\": \"\(later)\"}]"
                )::jsonb)
                """)
            let ids = try rows.map { try $0.decode("id", as: UUID.self) }
            #expect(try await queue.position(ids[0]).position == 0)
            #expect(try await queue.position(ids[1]).waiting?.reason == .scheduled)
            // Bad times are refused, naming the field, and write nothing.
            let before = try await schema.pool.int("SELECT count(*) FROM jobs")
            for bad in ["tomorrow", "2026-13-01T00:00:00Z", "2026-12-24T18:00:00", "2099-01-01T00:00:00Z"] {
                let error = await #expect(throws: PGError.self) {
                    try await schema.pool.query("SELECT submit_job(\("{\"kind\": \"test.script\", \"group_id\": \"\(group)\", \"run_at\": \"\(bad)\"}")::jsonb)")
                }
                #expect(error?.message.contains("run_at must be") == true, "\(bad)")
            }
            var far = Factory.spec()
            far.runAt = Date().addingTimeInterval(400 * 86400)
            let farError = await #expect(throws: JobQueueError.self) { try await queue.submit(far) }
            #expect(farError?.field == "run_at")
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == before)
        }
    }

    @Test("a cap admits at most N of a group's jobs (running or claimable) and the rest as slots free; other groups are not held")
    func groupCap() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            try await queue.setLimits(.kind("test.script"), perGroup: .set(2))
            let capped = UUID()
            let ids = try await queue.submitBatch((0..<6).map { _ in Factory.spec(conversation: capped) }, groupID: capped).jobIDs
            let other = try await queue.submit(Factory.spec()).job.id
            #expect(try await admitAll(schema.pool) == 3)
            #expect(try await queue.position(ids[2]).waiting?.reason == .groupCap)
            let running = try await claim(schema.pool, limit: 10)
            #expect(Set(running.map(\.id)) == Set([ids[0], ids[1], other]))
            #expect(try await admitAll(schema.pool) == 0)
            try await schema.pool.query(JobSQL.complete(ids: [ids[0], other], attempts: [1, 1]))
            // One of the capped group's two finished (the other group's job does not count).
            #expect(try await admitAll(schema.pool) == 1)
            // A group's own override wins over the kind's.
            // (Setting it sends the group's claimable job back to be admitted under the new cap.)
            try await queue.setLimits(.group(capped), perGroup: .set(4))
            // ids[1] still runs: 3 of the 4 slots are free, for ids[2...4]; ids[5] waits.
            #expect(try await admitAll(schema.pool) == 3)
            try await queue.setLimits(.group(capped), perGroup: .remove)
            try await queue.setLimits(.kind("test.script"), perGroup: .remove)
            #expect(try await admitAll(schema.pool) == 1)
            #expect(try await queue.schedulingSettings().limits.isEmpty)
        }
    }

    @Test("a rate limit hands out N tokens per period, charged at start, returned for jobs cancelled before they start")
    func rateTokens() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            try await queue.setLimits(.kind("test.script"), rate: .set(JobRate(count: 3, period: .seconds(60))))
            let a = UUID(), b = UUID()
            let aIDs = try await queue.submitBatch((0..<5).map { _ in Factory.spec(conversation: a) }, groupID: a).jobIDs
            let bIDs = try await queue.submitBatch((0..<5).map { _ in Factory.spec(conversation: b) }, groupID: b).jobIDs
            #expect(try await admitAll(schema.pool) == 3)
            // Groups take turns for the tokens.
            let admitted = Set(try await schema.pool.query("SELECT id FROM jobs WHERE tag IS NOT NULL").map { try $0.decode("id", as: UUID.self) })
            #expect(admitted.contains(aIDs[0]) && admitted.contains(bIDs[0]))
            let waiting = try await queue.position(aIDs[4])
            #expect(waiting.waiting?.reason == .rateLimit && waiting.etaSeconds! > 50)
            // A token of a job cancelled before its start comes back; started ones stay spent.
            let started = try await claim(schema.pool, limit: 2)
            #expect(started.count == 2)
            let unstarted = try await schema.pool.query("SELECT id FROM jobs WHERE status = 'pending' AND tag IS NOT NULL")[0].decode("id", as: UUID.self)
            try await queue.cancel(unstarted)
            #expect(try await admitAll(schema.pool) == 1)
            #expect(try await schema.pool.int("SELECT count(*) FROM job_rate_tokens WHERE started_at IS NOT NULL") == 2)
            // A retry of a rate-limited kind goes back to the admitter, not straight to the queue.
            _ = try await fail(schema.pool, started[0])
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE id = \(started[0].id) AND status = 'pending' AND tag IS NULL") == 1)
        }
    }

    @Test("a worker claims no job of a paused kind, hands back one it took as the pause landed, and runs it after resume; paused jobs keep their place")
    func pauseAndResume() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let id = try await queue.submit(Factory.spec()).job.id
            let tag = try await schema.pool.query("SELECT tag::text AS t FROM jobs WHERE id = \(id)")[0].decode("t", as: String.self)
            let (_, producer, deliveries) = stepwiseWorker(schema)
            // The producer read the pauses (none) at its first cycle; a pause then lands
            // unannounced (as for a worker without LISTEN): its next claim takes the job, sees
            // the pause and hands the job back unstarted.
            _ = try await producer.runOnce()
            #expect(deliveries.all.count == 1)
            try await schema.pool.query(JobSQL.release(id: id, attempt: 1))
            #expect(try await queue.pause(kind: "test.script"))
            #expect(!(try await queue.pause(kind: "test.script")))
            let raced = try await producer.runOnce()
            #expect(raced.claimed == 1 && deliveries.all.count == 1)
            #expect(try await queue.job(id).status == .pending)
            #expect(try await queue.position(id).waiting?.reason == .paused)
            // From then on it does not claim at all.
            #expect(try await producer.runOnce().limit == 0)
            #expect(try await queue.resume(kind: "test.script") == 1)
            try await queue.pause()
            producer.pausesChanged()
            #expect(try await producer.runOnce().limit == 0)
            #expect(try await queue.schedulingSettings().paused == [allKinds])
            #expect(try await queue.resume() == 1)
            producer.pausesChanged()
            #expect(try await schema.pool.query("SELECT tag::text AS t FROM jobs WHERE id = \(id)")[0].decode("t", as: String.self) == tag)
            #expect(try await producer.runOnce().claimed == 1)
            #expect(deliveries.all.count == 2 && deliveries.all[1].job.id == id)
            await #expect(throws: JobQueueError.self) { try await queue.pause(kind: "Not A Kind") }
        }
    }

    @Test("a batch records the end of its last job and notifies; waitForBatch returns then")
    func batchCompletion() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let group = UUID()
            let batch = try await queue.submitBatch((0..<3).map { _ in Factory.spec(conversation: group) }, groupID: group)
            let waiter = Task { try await queue.waitForBatch(batch.batchID, poll: .seconds(30)) }
            let claimed = try await claim(schema.pool, limit: 3)
            try await schema.pool.query(JobSQL.complete(ids: claimed.prefix(2).map(\.id), attempts: [1, 1]))
            #expect(try await admitAll(schema.pool) == 0)
            #expect(try await queue.batch(batch.batchID).finishedAt == nil)
            _ = try await fail(schema.pool, claimed[2], permanent: true)
            // The admitter folds the batch's finished count and sends the notification the
            // waiter hears (its 30 s poll would be too late for this test's budget).
            #expect(try await Maintenance(pool: schema.pool, logger: TestLog.quiet).admit()?.batchesFinished == 1)
            let progress = try await waiter.value
            #expect(progress.finishedAt != nil && progress.isFinished)
            // Re-queued, the batch is open again; cancelled, it ends again.
            try await queue.retry(claimed[2].id)
            _ = try await admitAll(schema.pool)
            #expect(try await queue.batch(batch.batchID).finishedAt == nil)
            try await queue.cancel(claimed[2].id)
            _ = try await admitAll(schema.pool)
            #expect(try await queue.batch(batch.batchID).finishedAt != nil)
        }
    }

    @Test("queue position is exact against a brute-force count in claim order with many groups, priorities, delays, caps and pauses")
    func positionUnderScheduling() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            var rng = SeededRandom(seed: 7)
            let sweep = Maintenance(pool: schema.pool, logger: TestLog.quiet)
            let groups = (0..<25).map { _ in UUID() }
            try await queue.setLimits(.group(groups[0]), perGroup: .set(1))
            try await queue.setLimits(.group(groups[1]), weight: .set(2.5))
            try await queue.setLimits(.kind("other.kind"), perGroup: .set(3))
            var ids: [UUID] = []
            for round in 0..<8 {
                for _ in 0..<Int.random(in: 3...8, using: &rng) {
                    let group = groups.randomElement(using: &rng)!
                    let specs = (0..<Int.random(in: 1...30, using: &rng)).map { i -> JobSpec in
                        var s = Factory.spec(
                            conversation: group, kind: i % 7 == 0 ? "other.kind" : "test.script", priority: JobPriority.allCases.randomElement(using: &rng)!)
                        if i % 11 == 5 { s.runAt = Date().addingTimeInterval(3600) }
                        return s
                    }
                    ids += try await queue.submitBatch(specs, groupID: group).jobIDs
                }
                _ = try await admitAll(schema.pool)
                let claimed = try await claim(schema.pool, limit: Int.random(in: 5...20, using: &rng), kinds: ["test.script", "other.kind"])
                for (i, c) in claimed.enumerated() where i % 2 == 0 {
                    try await schema.pool.query(JobSQL.complete(ids: [c.id], attempts: [c.attempt]))
                }
                if round == 3 { try await queue.setFairShare(false) }
                if round == 5 { try await queue.setFairShare(true) }
                if round % 2 == 1 { _ = try await sweep.sweep() }
            }
            try await queue.pause(kind: "other.kind")
            var checked = 0, waiting = 0
            for id in ids {
                let p = try await queue.position(id)
                if let position = p.position {
                    #expect(position == (try await queue.positionByCounting(id)).position, "job \(id)")
                    checked += 1
                } else if p.status == .pending {
                    #expect(p.waiting != nil)
                    waiting += 1
                }
            }
            #expect(checked > 100 && waiting > 5)
        }
    }
}
