import Foundation
import Postgres
import TestSupport
import Testing

@testable import JobEngine

/// Claims like a worker does (one statement), for tests that drive the engine step by step.
func claim(_ pool: PGPool, worker: String = "w1", limit: Int = 1, kinds: [String] = ["test.script", "image.generate"]) async throws -> [(id: UUID, attempt: Int)] {
    try await pool.query(JobSQL.claim(workerID: worker, kinds: kinds, limit: limit)).filter { !$0.isNull("id") }
        .map { (try $0.decode("id"), try $0.decode("attempt")) }
}

func fail(_ pool: PGPool, _ c: (id: UUID, attempt: Int), permanent: Bool = false, timedOut: Bool = false) async throws -> PGRows {
    try await pool.query(JobSQL.fail(
        id: c.id, attempt: c.attempt, timedOut ? .timedOut : .failed(message: "boom", permanent: permanent), backoff: RetryBackoff()))
}

/// Makes every pending job due now (instead of sleeping through its backoff).
func makeDue(_ pool: PGPool) async throws {
    try await pool.query("UPDATE jobs SET next_attempt_at = now() WHERE status = 'pending'")
}

@Suite("engine", .enabled(if: TestDatabase.isConfigured))
struct EngineTests {
    @Test("claims run high before normal before low, oldest first, including jobs inserted later")
    func priorityOrder() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            var expected: [UUID] = []
            let low1 = try await queue.submit(Factory.spec(priority: .low)).job.id
            let normal1 = try await queue.submit(Factory.spec(priority: .normal)).job.id
            let low2 = try await queue.submit(Factory.spec(priority: .low)).job.id
            let high1 = try await queue.submit(Factory.spec(priority: .high)).job.id
            let normal2 = try await queue.submit(Factory.spec(priority: .normal)).job.id
            expected = [high1]
            var order: [UUID] = []
            order += try await claim(schema.pool).map(\.id)
            // A high job inserted after the first claim still goes before everything older.
            let high2 = try await queue.submit(Factory.spec(priority: .high)).job.id
            for _ in 0..<5 { order += try await claim(schema.pool).map(\.id) }
            expected += [high2, normal1, normal2, low1, low2]
            #expect(order == expected)
        }
    }

    @Test("a job failing twice then succeeding retries with retry_count persisted")
    func failTwiceThenSucceed() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let id = try await queue.submit(Factory.spec()).job.id
            for n in 1...2 {
                let c = try #require(try await claim(schema.pool).first)
                let row = try #require(try await fail(schema.pool, c).first)
                #expect(try row.decode("status", as: JobStatus.self) == .pending)
                #expect(try row.decode("retry_count", as: Int.self) == n)
                // Not claimable before its backoff has passed.
                #expect(try await claim(schema.pool).isEmpty)
                try await makeDue(schema.pool)
            }
            let c = try #require(try await claim(schema.pool).first)
            #expect(try await schema.pool.query(JobSQL.complete(ids: [c.id], attempts: [c.attempt])).count == 1)
            let job = try await queue.job(id)
            #expect(job.status == .completed)
            #expect(job.retryCount == 2)
            #expect(job.attempt == 3)
            #expect(job.errors.count == 2)
            #expect(job.errors.map(\.attempt) == [1, 2])
            // Each error's time is the database's, read to the microsecond it wrote.
            let written: [Double] = try await schema.pool.query("""
                SELECT extract(epoch FROM (e->>'at')::timestamptz)::float8 AS at FROM jobs, jsonb_array_elements(errors) e WHERE id = \(id)
                """).map { try $0.decode("at") }
            #expect(zip(job.errors, written).allSatisfy { abs($0.at.timeIntervalSince1970 - $1) < 0.000_01 }, "\(job.errors.map(\.at)) \(written)")
            #expect(job.finishedAt != nil)
        }
    }

    @Test("backoff waits 1 s, 2 s, 4 s on the database clock, then retries run out into error")
    func backoffOnDatabaseClock() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let id = try await queue.submit(Factory.spec(maxRetries: 3)).job.id
            var delays: [Double] = []
            for _ in 0..<3 {
                let c = try #require(try await claim(schema.pool).first)
                _ = try await fail(schema.pool, c)
                // next_attempt_at minus the failure's own now(), both from the database.
                let row = try await schema.pool.query(
                    "SELECT extract(epoch FROM next_attempt_at - (errors -> -1 ->> 'at')::timestamptz)::float8 AS d FROM jobs WHERE id = \(id)")[0]
                delays.append(try row.decode("d"))
                try await makeDue(schema.pool)
            }
            #expect(delays.map { ($0 * 1000).rounded() / 1000 } == [1, 2, 4])
            let c = try #require(try await claim(schema.pool).first)
            let last = try #require(try await fail(schema.pool, c).first)
            #expect(try last.decode("status", as: JobStatus.self) == .error)
            let job = try await queue.job(id)
            #expect(job.status == .error)
            #expect(job.retryCount == 3)
            #expect(job.errorMessage == "boom")
            #expect(job.errors.count == 4)
        }
    }

    @Test("a permanent failure skips retries; a timeout writes error with its message")
    func permanentAndTimeout() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let a = try await queue.submit(Factory.spec()).job.id
            _ = try await fail(schema.pool, try #require(try await claim(schema.pool).first), permanent: true)
            #expect(try await queue.job(a).status == .error)
            #expect(try await queue.job(a).retryCount == 0)
            let b = try await queue.submit(Factory.spec(timeout: .seconds(7))).job.id
            _ = try await fail(schema.pool, try #require(try await claim(schema.pool).first), timedOut: true)
            let job = try await queue.job(b)
            #expect(job.status == .error)
            #expect(job.errorMessage == "timed out after 7 s")
            // The default timeout is five minutes.
            #expect(try await queue.submit(Factory.spec()).job.timeout == .seconds(300))
            #expect(JobSpec(kind: "test.script", params: [:], groupID: UUID()).timeout == .seconds(300))
        }
    }

    @Test("a write from a stale attempt changes nothing")
    func staleAttemptRejected() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let id = try await queue.submit(Factory.spec()).job.id
            let first = try #require(try await claim(schema.pool, worker: "old").first)
            // The sweep presumes the worker dead and re-queues the job. (Staleness counts from the
            // later of the heartbeat and the server's start: a 1 s lease keeps this test right on
            // a cluster started moments ago.)
            try await JobFactory(schema.pool).silence([id], for: .seconds(3600))
            let rescued = try await Maintenance(pool: schema.pool, configuration: MaintenanceConfiguration(lease: .seconds(1)), logger: TestLog.quiet).sweep()
            #expect(rescued == 1)
            try await makeDue(schema.pool)
            let second = try #require(try await claim(schema.pool, worker: "new").first)
            #expect(second.attempt == first.attempt + 1)
            // The old attempt's complete, fail and heartbeat change nothing.
            #expect(try await schema.pool.query(JobSQL.complete(ids: [first.id], attempts: [first.attempt])).isEmpty)
            #expect(try await fail(schema.pool, first).isEmpty)
            #expect(try await schema.pool.query(JobSQL.heartbeat(workerID: "old", ids: [first.id], attempts: [first.attempt])).isEmpty)
            let job = try await queue.job(id)
            #expect(job.status == .running)
            #expect(job.workerID == "new")
            #expect(try await schema.pool.query(JobSQL.complete(ids: [second.id], attempts: [second.attempt])).count == 1)
        }
    }

    @Test("a completion skips a row another statement holds locked instead of waiting, and writes it next time")
    func ownerWritesNeverWait() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            for _ in 0..<2 { _ = try await queue.submit(Factory.spec()) }
            let jobs = try await claim(schema.pool, limit: 2)
            try #require(jobs.count == 2)
            let (held, free) = (jobs[0], jobs[1])
            // Without SKIP LOCKED these would wait for the holder; the lock timeout makes a
            // wait an error (55P03) instead of a hang.
            func ownerWrite(_ query: PGQuery) async throws -> PGRows {
                try await schema.pool.withTransaction { conn in
                    try await conn.query("SET LOCAL lock_timeout = '3s'")
                    return try await conn.query(query)
                }
            }
            try await schema.pool.withConnection { holder in
                try await holder.query("BEGIN")
                try await holder.query("SELECT id FROM jobs WHERE id = \(held.id) FOR UPDATE")
                let rows = try await ownerWrite(
                    JobSQL.completeAndClaim(ids: [held.id, free.id, held.id], attempts: [held.attempt, free.attempt, held.attempt + 7],
                                            workerID: "w1", kinds: ["test.script"], limit: 0))
                #expect(try rows[0].decode("completed_ids", as: [UUID].self) == [free.id])
                #expect(try rows[0].decode("busy_ids", as: [UUID].self) == [held.id])
                try await holder.query("COMMIT")
            }
            #expect(try await queue.job(held.id).status == .running)
            #expect(try await queue.job(free.id).status == .completed)
            // Once the lock is gone, the same completion goes through.
            let again = try await schema.pool.query(
                JobSQL.completeAndClaim(ids: [held.id], attempts: [held.attempt], workerID: "w1", kinds: ["test.script"], limit: 0))
            #expect(try again[0].decode("completed_ids", as: [UUID].self) == [held.id])
            #expect(try again[0].decode("busy_ids", as: [UUID].self).isEmpty)
        }
    }

    @Test("a job that kills its worker on every attempt ends in error after its retries")
    func poisonJob() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let id = try await queue.submit(Factory.spec(maxRetries: 2)).job.id
            let sweep = Maintenance(pool: schema.pool, configuration: MaintenanceConfiguration(lease: .seconds(1)), logger: TestLog.quiet)
            for _ in 0..<3 {
                #expect(try await claim(schema.pool).count == 1)
                try await schema.pool.query("UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = \(id)")
                #expect(try await sweep.sweep() == 1)
                try await makeDue(schema.pool)
            }
            let job = try await queue.job(id)
            #expect(job.status == .error)
            #expect(job.attempt == 3)
            #expect(job.retryCount == 2)
            #expect(job.errorMessage?.hasPrefix("worker lost") == true)
            #expect(try await claim(schema.pool).isEmpty)
        }
    }

    @Test("the sweep leaves live jobs alone and ends jobs far past their deadline")
    func sweepBoundaries() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let fresh = try await queue.submit(Factory.spec()).job.id
            let overdue = try await queue.submit(Factory.spec(timeout: .seconds(5))).job.id
            #expect(try await claim(schema.pool, limit: 2).count == 2)
            try await JobFactory(schema.pool).silence([fresh], for: .seconds(50))
            try await JobFactory(schema.pool).overrun([overdue], by: .seconds(31))
            let sweep = Maintenance(pool: schema.pool, configuration: MaintenanceConfiguration(lease: .seconds(60)), logger: TestLog.quiet)
            #expect(try await sweep.sweep() == 1)
            #expect(try await queue.job(fresh).status == .running)
            let ended = try await queue.job(overdue)
            #expect(ended.status == .error)
            #expect(ended.errorMessage == "timed out after 5 s")
        }
    }

    @Test("concurrent claimers never get the same job: 4 claimers × 2,000 jobs")
    func concurrentClaimers() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let conversation = UUID()
            let specs = (0..<2000).map { _ in Factory.spec(conversation: conversation) }
            _ = try await queue.submitBatch(specs, groupID: conversation)
            let pools = (0..<4).map { _ in schema.makePool(maxConnections: 1) }
            let claimed = try await withThrowingTaskGroup(of: [UUID].self) { group in
                for (i, pool) in pools.enumerated() {
                    group.addTask {
                        var mine: [UUID] = []
                        while true {
                            let got = try await claim(pool, worker: "w\(i)", limit: 7)
                            if got.isEmpty { return mine }
                            mine += got.map(\.id)
                        }
                    }
                }
                return try await group.reduce(into: [[UUID]]()) { $0.append($1) }
            }
            let all = claimed.flatMap { $0 }
            #expect(all.count == 2000)
            #expect(Set(all).count == 2000)
            #expect(claimed.filter { !$0.isEmpty }.count >= 2, "claims spread over several claimers")
            for pool in pools { await pool.close() }
        }
    }

    @Test("a claim's plan is made once per limit and reused, not made again for every claim")
    func claimPlanIsReused() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let conversation = UUID()
            _ = try await queue.submitBatch((0..<100).map { _ in Factory.spec(conversation: conversation) }, groupID: conversation)
            let pool = schema.makePool(maxConnections: 1)
            for _ in 0..<20 { #expect(try await claim(pool, limit: 3).count == 3) }
            for _ in 0..<10 { #expect(try await claim(pool, limit: 2).count == 2) }
            // PostgreSQL plans a prepared statement afresh for its first five runs, then keeps a
            // generic plan if it is no worse; a bound LIMIT never is (planned for a tenth of the
            // table), so every claim was planned again.
            let rows = try await pool.query("""
                SELECT generic_plans, custom_plans FROM pg_prepared_statements
                WHERE statement LIKE '%picked AS MATERIALIZED%' AND statement NOT LIKE '%pg_prepared_statements%'
                ORDER BY generic_plans DESC
                """)
            let plans = try rows.map { (generic: try $0.decode("generic_plans", as: Int.self), custom: try $0.decode("custom_plans", as: Int.self)) }
            #expect(plans.count == 2, "one statement per limit")
            #expect(plans.first.map { $0.generic >= 15 && $0.custom <= 5 } == true, "\(plans)")
            #expect(plans.last.map { $0.generic >= 5 && $0.custom <= 5 } == true, "\(plans)")
            await pool.close()
        }
    }

    @Test("idempotent submit returns the same job")
    func idempotentSubmit() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let conversation = UUID()
            let a = try await queue.submit(Factory.spec(conversation: conversation, key: "msg-42"))
            let b = try await queue.submit(Factory.spec(conversation: conversation, key: "msg-42"))
            #expect(a.created && !b.created)
            #expect(a.job.id == b.job.id)
            // The same key in another conversation is another job.
            let c = try await queue.submit(Factory.spec(conversation: UUID(), key: "msg-42"))
            #expect(c.created && c.job.id != a.job.id)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 2)
        }
    }

    @Test("a batch is atomic: a mismatched conversation or a bad item rejects it all")
    func batchAtomic() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let conversation = UUID()
            var specs = (0..<5).map { _ in Factory.spec(conversation: conversation) }
            specs[3].groupID = UUID()
            let mismatch = await #expect(throws: JobQueueError.self) { try await queue.submitBatch(specs, groupID: conversation) }
            #expect(mismatch?.index == 3)
            #expect(mismatch?.field == "group_id")
            specs[3].groupID = conversation
            specs[2].maxRetries = 99
            let bad = await #expect(throws: JobQueueError.self) { try await queue.submitBatch(specs, groupID: conversation) }
            #expect(bad?.index == 2)
            #expect(bad?.field == "max_retries")
            await #expect(throws: JobQueueError.self) { try await queue.submitBatch([], groupID: conversation) }
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 0)
            #expect(try await schema.pool.int("SELECT count(*) FROM batches") == 0)
            // A database-side failure mid-batch also writes nothing: a duplicate key in the table.
            _ = try await queue.submit(Factory.spec(conversation: conversation, key: "taken"))
            specs[2].maxRetries = 3
            specs[4].idempotencyKey = "taken"
            await #expect(throws: JobQueueError.self) { try await queue.submitBatch(specs, groupID: conversation) }
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 1)
            #expect(try await schema.pool.int("SELECT count(*) FROM batches") == 0)
        }
    }

    @Test("a batch of 10,000 jobs goes in one statement, in order, with its progress counted")
    func bigBatchAndProgress() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let conversation = UUID()
            let specs = (0..<10_000).map { i in Factory.spec(conversation: conversation, params: ["i": .number(Double(i))]) }
            let batch = try await queue.submitBatch(specs, groupID: conversation, idempotencyKey: "upload-1")
            #expect(batch.jobIDs.count == 10_000)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE batch_id = \(batch.batchID)") == 10_000)
            let inOrder = try await schema.pool.int(
                "SELECT count(*) FROM (SELECT (params->>'i')::int AS i, row_number() OVER (ORDER BY seq) - 1 AS r FROM jobs) x WHERE i = r")
            #expect(inOrder == 10_000)
            let again = try await queue.submitBatch(specs, groupID: conversation, idempotencyKey: "upload-1")
            #expect(!again.created && again.batchID == batch.batchID && again.jobIDs == batch.jobIDs)
            let tooBig = (0..<10_001).map { _ in Factory.spec(conversation: conversation) }
            await #expect(throws: JobQueueError.self) { try await queue.submitBatch(tooBig, groupID: conversation) }
            let c = try await claim(schema.pool, limit: 3)
            try await schema.pool.query(JobSQL.complete(ids: c.map(\.id), attempts: c.map(\.attempt)))
            try await queue.cancel(batch.jobIDs[9999])
            let progress = try await queue.batch(batch.batchID)
            #expect(progress.total == 10_000)
            #expect(progress.counts[.completed] == 3)
            #expect(progress.counts[.cancelled] == 1)
            #expect(progress.counts[.pending] == 9996)
            #expect(!progress.isFinished)
            #expect(try await queue.cancelBatch(batch.batchID) == 9996)
            #expect(try await queue.batch(batch.batchID).isFinished)
        }
    }

    @Test("a job submitted in the caller's transaction exists only if it commits")
    func submitInCallersTransaction() async throws {
        struct Abort: Error {}
        try await TestDatabase.withMigratedSchema { schema, queue in
            try await schema.pool.query("CREATE TABLE messages (id int)")
            _ = try? await schema.pool.withTransaction { conn in
                try await conn.query("INSERT INTO messages VALUES (1)")
                _ = try await queue.submit(Factory.spec(), on: conn)
                throw Abort()
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 0)
            try await schema.pool.withTransaction { conn in
                try await conn.query("INSERT INTO messages VALUES (2)")
                _ = try await queue.submit(Factory.spec(), on: conn)
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 1)
            #expect(try await schema.pool.int("SELECT count(*) FROM messages") == 1)

            // A batch too: rolled back with the caller's row, or committed with it.
            let group = UUID()
            let specs = (0..<3).map { _ in Factory.spec(conversation: group) }
            _ = try? await schema.pool.withTransaction { conn in
                try await conn.query("INSERT INTO messages VALUES (3)")
                _ = try await queue.submitBatch(specs, groupID: group, on: conn)
                throw Abort()
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM batches") == 0)
            let batch = try await schema.pool.withTransaction { conn in
                try await conn.query("INSERT INTO messages VALUES (4)")
                return try await queue.submitBatch(specs, groupID: group, idempotencyKey: "b", on: conn)
            }
            #expect(try await queue.batch(batch.batchID).total == 3)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE batch_id IS NOT NULL") == 3)
            #expect(try await schema.pool.int("SELECT count(*) FROM messages") == 2)
            // Its key again, in a transaction: refused as a duplicate, and that transaction with it.
            let again = await #expect(throws: PGTransactionError.self) {
                try await schema.pool.withTransaction { conn in
                    _ = try await queue.submitBatch(specs, groupID: group, idempotencyKey: "b", on: conn)
                }
            }
            #expect((again?.underlying as? JobQueueError)?.code == .duplicate)
            // Outside a transaction, the same key returns the first batch.
            #expect(try await queue.submitBatch(specs, groupID: group, idempotencyKey: "b").batchID == batch.batchID)
        }
    }

    @Test("every way a job enters the queue is counted once for queue positions")
    func everyInsertCountedOnce() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let conversation = UUID()
            let handInsert: PGQuery = """
                INSERT INTO jobs (id, group_id, kind, params, priority)
                VALUES (gen_random_uuid(), \(conversation), 'test.script', '{}', 'high')
                """
            var ids: [UUID] = []
            // In one transaction: the library's one-job insert (which counts itself and tells
            // the trigger so), then hand-written inserts the trigger must still count.
            try await schema.pool.withTransaction { conn in
                ids.append(try await queue.submit(Factory.spec(conversation: conversation), on: conn).job.id)
                try await conn.query(handInsert)
                ids.append(try await queue.submit(Factory.spec(conversation: conversation, priority: .low), on: conn).job.id)
                try await conn.query(handInsert)
                ids.append(try await queue.submit(Factory.spec(conversation: conversation, key: "k1"), on: conn).job.id)
            }
            try await schema.pool.query(handInsert)
            ids += try await queue.submitBatch((0..<3).map { _ in Factory.spec(conversation: conversation) }, groupID: conversation).jobIDs
            // Hand-written inserts carry no tag (no place yet): the admitter gives them one.
            let untagged = try await schema.pool.query("SELECT id FROM jobs WHERE tag IS NULL").map { try $0.decode("id", as: UUID.self) }
            #expect(untagged.count == 3)
            for id in untagged {
                let p = try await queue.position(id)
                #expect(p.position == nil && p.waiting?.reason == .admitting)
            }
            #expect(try await Maintenance(pool: schema.pool, logger: TestLog.quiet).admit()?.admitted == 3)
            let counted = try await schema.pool.int("SELECT coalesce(sum(n), 0)::int FROM job_count_deltas WHERE metric = 0")
            let pending = try await schema.pool.int("SELECT count(*)::int FROM jobs WHERE status = 'pending'")
            #expect(pending == 9)
            #expect(counted == pending)
            for id in try await schema.pool.query("SELECT id FROM jobs").map({ try $0.decode("id", as: UUID.self) }) {
                #expect(try await queue.position(id).position == (try await queue.positionByCounting(id)).position)
            }
        }
    }

    @Test("the kind rule without a regular expression accepts exactly what the regular expression does")
    func kindRuleMatchesRegex() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            let values = ["", "a", "z", "A", "image.generate", "image_generate-v2.1", "9abc", "_a", ".a", "-a", "a b", "a\n",
                          "a$", "a*", "a/b", "é", "aé", "ａ", String(repeating: "a", count: 64), String(repeating: "a", count: 65),
                          "a" + String(repeating: "9", count: 63), "a" + String(repeating: "9", count: 64)]
            for value in values {
                let regex: Bool = try await schema.pool.scalar("SELECT \(value) ~ '^[a-z][a-z0-9_.-]{0,63}$'")
                var accepted = true
                do {
                    _ = try await schema.pool.query("SELECT \(value)::job_kind")
                } catch let error as PGError where error.sqlState == .checkViolation {
                    accepted = false
                    #expect(error.constraint == "job_kind_check")
                }
                #expect(accepted == regex, "kind \(value.debugDescription): the domain says \(accepted), the regular expression \(regex)")
            }
        }
    }

    @Test("the schema refuses impossible rows written by hand, naming the rule")
    func schemaRefusesImpossibleRows() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let id = try await queue.submit(Factory.spec()).job.id
            let refused: [(PGQuery, String)] = [
                ("UPDATE jobs SET kind = 'Bad Kind' WHERE id = \(id)", "job_kind_check"),
                ("UPDATE jobs SET params = '[1]' WHERE id = \(id)", "job_params_check"),
                ("UPDATE jobs SET retry_count = -1 WHERE id = \(id)", "job_counter_check"),
                ("UPDATE jobs SET max_retries = 26 WHERE id = \(id)", "job_max_retries_check"),
                ("UPDATE jobs SET timeout = interval '25 hours' WHERE id = \(id)", "job_timeout_check"),
                ("UPDATE jobs SET backoff_jitter = 2 WHERE id = \(id)", "job_jitter_check"),
                ("UPDATE jobs SET errors = '{}' WHERE id = \(id)", "job_errors_check"),
                ("UPDATE jobs SET status = 'running' WHERE id = \(id)", "jobs_running_is_claimed"),
                ("UPDATE jobs SET status = 'completed' WHERE id = \(id)", "jobs_finished_iff_final"),
                ("UPDATE jobs SET finished_at = now() WHERE id = \(id)", "jobs_finished_iff_final"),
                ("UPDATE jobs SET status = 'error', finished_at = now() WHERE id = \(id)", "jobs_error_has_message"),
                ("UPDATE jobs SET retry_count = 4 WHERE id = \(id)", "jobs_retries_within_max"),
                ("""
                 INSERT INTO jobs (id, group_id, params, idempotency_key)
                 VALUES (gen_random_uuid(), gen_random_uuid(), '{}', '')
                 """, "job_idempotency_key_check"),
            ]
            for (statement, rule) in refused {
                let error = await #expect(throws: PGError.self) { try await schema.pool.query(statement) }
                #expect(error?.sqlState == .checkViolation, "\(rule)")
                #expect(error?.constraint == rule)
            }
            let job = try await queue.job(id)
            #expect(job.status == .pending && job.kind == "test.script" && job.retryCount == 0)
            #expect(try await schema.pool.int("SELECT count(*)::int FROM jobs") == 1)
        }
    }

    @Test("cancel a pending job, refuse to cancel a finished one, re-queue a job in error")
    func cancelAndRetry() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let a = try await queue.submit(Factory.spec()).job.id
            #expect(try await queue.cancel(a) == .pending)
            #expect(try await queue.job(a).status == .cancelled)
            let again = await #expect(throws: JobQueueError.self) { try await queue.cancel(a) }
            #expect(again?.code == .invalidState)
            let missing = await #expect(throws: JobQueueError.self) { try await queue.cancel(UUID()) }
            #expect(missing?.code == .notFound)
            let b = try await queue.submit(Factory.spec(maxRetries: 0)).job.id
            _ = try await fail(schema.pool, try #require(try await claim(schema.pool).first))
            #expect(try await queue.job(b).status == .error)
            try await queue.retry(b)
            let job = try await queue.job(b)
            #expect(job.status == .pending && job.retryCount == 0 && job.finishedAt == nil)
            await #expect(throws: JobQueueError.self) { try await queue.retry(b) }
        }
    }

    @Test("queue position is exact against a brute-force count on randomized queues")
    func positionMatchesBruteForce() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            var rng = SeededRandom(seed: 42)
            let sweep = Maintenance(pool: schema.pool, configuration: MaintenanceConfiguration(lease: .seconds(60)), logger: TestLog.quiet)
            var ids: [UUID] = []
            for round in 0..<6 {
                let conversation = UUID()
                let specs = (0..<Int.random(in: 20...60, using: &rng)).map { _ in
                    Factory.spec(conversation: conversation, priority: JobPriority.allCases.randomElement(using: &rng)!)
                }
                ids += try await queue.submitBatch(specs, groupID: conversation).jobIDs
                for _ in 0..<Int.random(in: 1...5, using: &rng) { ids.append(try await queue.submit(Factory.spec(priority: .allCases.randomElement(using: &rng)!)).job.id) }
                // Running, retrying (waiting out backoff), completed and cancelled jobs mixed in.
                let claimed = try await claim(schema.pool, limit: Int.random(in: 3...12, using: &rng))
                for (i, c) in claimed.enumerated() {
                    switch i % 3 {
                    case 0: _ = try await fail(schema.pool, c)
                    case 1: try await schema.pool.query(JobSQL.complete(ids: [c.id], attempts: [c.attempt]))
                    default: break
                    }
                }
                await queue.cancelIfOpen(ids[Int.random(in: 0..<ids.count, using: &rng)])
                if round % 2 == 1 { _ = try await sweep.sweep() }  // some counts folded, some not
                if round == 3 { try await schema.pool.query("UPDATE jobs SET tag = tag - interval '2 hours' WHERE seq % 5 = 0") }
            }
            // Retries either still wait (an hour to go) or are due again, so the two counts
            // below cannot disagree because a 1 s backoff ran out between them.
            try await schema.pool.query(
                """
                UPDATE jobs SET next_attempt_at = CASE WHEN seq % 2 = 0 THEN now() + interval '1 hour' ELSE now() - interval '1 second' END
                WHERE status = 'pending' AND retry_count > 0
                """)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE status = 'pending' AND next_attempt_at > now()") > 0)
            var checked = 0
            for id in ids {
                let p = try await queue.position(id)
                let truth = try await queue.positionByCounting(id)
                if p.status == .pending {
                    #expect(p.position == truth.position, "job \(id)")
                    #expect(p.aheadHigherPriority == truth.aheadHigherPriority, "job \(id)")
                    checked += 1
                } else {
                    #expect(p.position == nil)
                }
            }
            #expect(checked > 100)
        }
    }
}

extension JobQueue {
    /// Cancels and ignores errors (test helper for random cancels of maybe-final jobs).
    func cancelIfOpen(_ id: UUID) async {
        _ = try? await self.cancel(id)
    }
}

@Suite("the engine's JSON writer and reader")
struct JSONTextTests {
    @Test("values written and read back are equal, with escapes, unicode and nesting")
    func roundTrip() throws {
        let value: JSONValue = .object([
            "prompt": "a \"quoted\" \\ back\nslash\ttab \u{1} 🎨 中文", "n": 42, "x": 1.5, "neg": -3e-7, "ok": true, "none": .null,
            "list": .array([1, "two", .array([]), .object([:])]),
        ])
        #expect(try JSONValue.parse(value.jsonText) == value)
        #expect(try JSONValue.parse(#"{"a":"\ud83c\udfa8\u00e9"}"#) == .object(["a": "🎨é"]))
        // What Foundation writes, the reader reads the same way.
        let foundation = String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
        #expect(try JSONValue.parse(foundation) == value)
        #expect(throws: JobQueueError.self) { try JSONValue.parse(#"{"a":1"#) }
        #expect(throws: JobQueueError.self) { try JSONValue.parse("[1,]") }
        #expect(throws: JobQueueError.self) { try JSONValue.parse("{} x") }
        // The exact bytes: keys sorted, integers without a fraction, escapes as RFC 8259 writes them.
        let exact: JSONValue = .object(["b": -12345, "a": "q\"\\/\u{0}\u{1f}é", "c": .array([0, 2.5, 1_000_000_000_000, true, .null])])
        #expect(exact.jsonText == #"{"a":"q\"\\/\u0000\u001fé","b":-12345,"c":[0,2.5,1000000000000,true,null]}"#)
    }
}

@Suite("UUID version 7")
struct UUIDv7Tests {
    @Test("ids carry version 7 and the RFC variant, sort by time, and do not repeat")
    func shape() {
        let ids = (0..<10_000).map { _ in UUIDv7.make() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(100) {
            let s = id.uuidString
            #expect(s[s.index(s.startIndex, offsetBy: 14)] == "7")
            #expect("89AB".contains(s[s.index(s.startIndex, offsetBy: 19)]))
        }
        let early = UUIDv7.make(now: Date(timeIntervalSince1970: 1_000_000_000))
        let late = UUIDv7.make(now: Date(timeIntervalSince1970: 2_000_000_000))
        #expect(early.uuidString < late.uuidString)
    }
}

@Suite("SHA-256")
struct SHA256Tests {
    @Test("SHA-256 matches the standard test vectors")
    func sha256() {
        #expect(SHA256.hexDigest(Array("".utf8)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hexDigest(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hexDigest(Array(String(repeating: "a", count: 1000).utf8)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test("HMAC-SHA256 matches RFC 4231's vectors, with a short key and one longer than a block")
    func hmac() {
        #expect(SHA256.hex(SHA256.hmac(key: [UInt8](repeating: 0x0b, count: 20), message: Array("Hi There".utf8)))
            == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(SHA256.hex(SHA256.hmac(key: [UInt8](repeating: 0xaa, count: 131), message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)))
            == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        #expect(SHA256.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!SHA256.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!SHA256.constantTimeEqual([1, 2, 3], [1, 2]))
    }
}
