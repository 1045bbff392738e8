import Foundation
import JobEngine
import Postgres
import TestSupport
import Testing

@Suite("retention", .enabled(if: TestDatabase.isConfigured))
struct RetentionTests {
    @Test("old finished jobs and their results go; pending, running and recent jobs stay; a dry run deletes nothing")
    func pruneKeepsWhatMustStay() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let pool = schema.pool
            let conversation = UUID()
            // 30 old finished jobs (completed with an image, error, cancelled), an old batch of
            // finished jobs, a batch with one old pending job, recent finished jobs, and old
            // pending and running jobs that must stay whatever their age.
            let old = try await (0..<30).asyncMap { _ in try await queue.submit(Factory.spec(conversation: conversation)).job.id }
            let oldBatch = try await queue.submitBatch((0..<4).map { _ in Factory.spec(conversation: conversation) }, groupID: conversation)
            let mixedBatch = try await queue.submitBatch((0..<3).map { _ in Factory.spec(conversation: conversation) }, groupID: conversation)
            let recent = try await (0..<5).asyncMap { _ in try await queue.submit(Factory.spec(conversation: conversation)).job.id }
            let pending = try await (0..<3).asyncMap { _ in try await queue.submit(Factory.spec(conversation: conversation)).job.id }
            let running = try await queue.submit(Factory.spec(conversation: conversation)).job.id
            let finishedOld = old + oldBatch.jobIDs + Array(mixedBatch.jobIDs.prefix(2))
            try await pool.query("""
                UPDATE jobs SET status = (ARRAY['completed', 'error', 'cancelled'])[1 + (seq % 3)]::job_status,
                                error_message = 'failed', finished_at = now() - interval '8 days',
                                created_at = now() - interval '9 days'
                WHERE id = ANY(\(finishedOld)::uuid[])
                """)
            let factory = JobFactory(pool)
            try await factory.finish(recent, ago: .seconds(86_400))
            try await factory.age(pending + [mixedBatch.jobIDs[2]], by: .seconds(30 * 86_400))
            try await factory.age([running], by: .seconds(20 * 86_400))
            try await factory.run([running])
            try await pool.query("UPDATE batches SET created_at = now() - interval '9 days'")
            let withImages = Array(finishedOld.prefix(12)) + Array(recent.prefix(2))
            for id in withImages {
                try await pool.query("""
                    INSERT INTO job_results (job_id, content_type, bytes, byte_size, sha256, backend, generation_ms)
                    VALUES (\(id), 'image/png', '\\x89504e47', 4, repeat('a', 64), 'test', 1)
                    """)
            }
            try await pool.query("""
                INSERT INTO workers (id, host, pid, concurrency, kinds, last_seen_at, stopped_at) VALUES
                ('gone', 'h', 1, 1, '{}', now() - interval '10 days', now() - interval '10 days'),
                ('here', 'h', 2, 1, '{}', now(), NULL)
                """)
            let maintenance = Maintenance(pool: pool, configuration: MaintenanceConfiguration(lease: .seconds(60)), logger: TestLog.quiet)
            let week = Duration.seconds(7 * 86400)

            let preview = try await maintenance.prune(olderThan: week, batch: 7, dryRun: true)
            #expect(preview == PruneResult(jobs: finishedOld.count, results: 12, batches: 1, workers: 1, transactions: 1))
            #expect(try await pool.int("SELECT count(*) FROM jobs") == 30 + 4 + 3 + 5 + 3 + 1)

            let pruned = try await maintenance.prune(olderThan: week, batch: 7)
            #expect(pruned.jobs == finishedOld.count && pruned.results == 12 && pruned.batches == 1 && pruned.workers == 1)
            // Pages of 7: 36 jobs take 6 transactions (the last one short).
            #expect(pruned.transactions == (finishedOld.count + 6) / 7)
            let left = Set(try await pool.query("SELECT id FROM jobs").map { try $0.decode("id", as: UUID.self) })
            #expect(left == Set(recent + pending + [running, mixedBatch.jobIDs[2]]))
            #expect(try await pool.int("SELECT count(*) FROM job_results") == 2)
            #expect(try await pool.int("SELECT count(*) FROM batches WHERE id = \(mixedBatch.batchID)") == 1)
            #expect(try await pool.int("SELECT count(*) FROM batches WHERE id = \(oldBatch.batchID)") == 0)
            #expect(try await pool.query("SELECT id FROM workers").map { try $0.decode("id", as: String.self) } == ["here"])
            // Nothing left to do, and bad ages are refused by the database as well.
            #expect(try await maintenance.prune(olderThan: week) == PruneResult(transactions: 1))
            await #expect(throws: PGTransactionError.self) { try await maintenance.prune(olderThan: .zero) }
            // The queue's position counts are untouched by deleting finished jobs.
            let position = try await queue.position(pending[0])
            #expect(position.position == (try await queue.positionByCounting(pending[0])).position)
        }
    }

    @Test("pruning a large backlog in pages never makes a claiming worker wait on a lock")
    func pruneNeverBlocksClaims() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let pool = schema.pool
            let conversation = UUID()
            for _ in 0..<4 {
                _ = try await queue.submitBatch((0..<1000).map { _ in Factory.spec(conversation: conversation) }, groupID: conversation)
            }
            try await pool.query("""
                UPDATE jobs SET status = 'completed', finished_at = now() - interval '30 days'
                """)
            _ = try await queue.submitBatch((0..<400).map { _ in Factory.spec(conversation: conversation, params: ["sleep_ms": 1]) }, groupID: conversation)

            // A watcher samples the lock table for any waiting lock on this schema's tables.
            let watcherPool = schema.makePool(maxConnections: 1)
            let waits = Task {
                var seen = 0
                var samples = 0
                while !Task.isCancelled {
                    seen += (try? await watcherPool.int("""
                        SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE NOT l.granted AND n.nspname = current_schema()
                        """)) ?? 0
                    samples += 1
                    try? await Task.sleep(for: .milliseconds(5))
                }
                return (seen, samples)
            }
            // A worker whose every statement would fail after 200 ms of waiting for a lock.
            var config = TestDatabase.configuration(schema: schema.name)
            config.lockTimeout = .milliseconds(200)
            let workerPool = PGPool(configuration: config, options: .init(maxConnections: 4), logger: TestLog.quiet)
            var workerConfig = WorkerConfiguration()
            workerConfig.concurrency = 8
            workerConfig.pollInterval = .milliseconds(20)
            workerConfig.retention = nil
            let worker = Worker(pool: workerPool, handlers: [SleepHandler()], configuration: workerConfig, logger: TestLog.quiet)
            let running = Task { try await worker.run() }

            let maintenance = Maintenance(pool: pool, configuration: MaintenanceConfiguration(lease: .seconds(60)), logger: TestLog.quiet)
            let pruned = try await maintenance.prune(olderThan: .seconds(86400), batch: 100)
            #expect(try await eventually { try await pool.int("SELECT count(*) FROM jobs WHERE status = 'completed'") == 400 })
            running.cancel()
            _ = await running.result
            waits.cancel()
            let (seen, samples) = await waits.value
            await workerPool.close()
            await watcherPool.close()

            #expect(pruned.jobs == 4000)
            #expect(pruned.transactions == 41)  // 40 full pages and the empty one that ends it
            #expect(try await pool.int("SELECT count(*) FROM jobs") == 400)
            #expect(worker.counters.claimErrors == 0)
            #expect(worker.counters.completed == 400)
            #expect(samples > 0)
            #expect(seen == 0, "lock waits seen in \(samples) samples")
        }
    }

    @Test("a worker's sweep prunes what is older than its retention, and only that")
    func sweepPrunes() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let conversation = UUID()
            let ids = try await queue.submitBatch((0..<10).map { _ in Factory.spec(conversation: conversation) }, groupID: conversation).jobIDs
            try await JobFactory(schema.pool).finish(Array(ids.prefix(6)), as: .cancelled, ago: .seconds(7200))
            var config = WorkerConfiguration()
            config.retention = .seconds(3600)
            let worker = Worker(pool: schema.pool, handlers: [], configuration: config, logger: TestLog.quiet)
            let round = try await worker.sweepOnce()
            #expect(round.led && round.rescued == 0 && round.pruned.jobs == 6)
            #expect(worker.counters.pruned == 6)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 4)
        }
    }
}

/// Runs `test.script` jobs by sleeping their `sleep_ms`.
struct SleepHandler: JobHandler {
    let kind = "test.script"
    func run(_ claimed: ClaimedJob, context: JobContext) async throws -> JobResult {
        try await Task.sleep(for: .milliseconds(claimed.job.params["sleep_ms"]?.intValue ?? 0))
        return JobResult()
    }
}
