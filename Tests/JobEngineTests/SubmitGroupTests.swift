import Foundation
import Postgres
import TestSupport
import Testing

@testable import JobEngine

/// Group commit: one-job submits made at the same time share statements and commits, and each
/// still gets its own job, idempotency outcome and error.
@Suite("grouped submits", .enabled(if: TestDatabase.isConfigured))
struct SubmitGroupTests {
    /// Submits every spec at once, each from its own task, and returns each one's outcome in order.
    func submitAtOnce(_ queue: JobQueue, _ specs: [JobSpec]) async -> [Result<(job: Job, created: Bool), any Error>] {
        await withTaskGroup(of: (Int, Result<(job: Job, created: Bool), any Error>).self) { group in
            for (i, spec) in specs.enumerated() {
                group.addTask {
                    do { return (i, .success(try await queue.submit(spec))) } catch { return (i, .failure(error)) }
                }
            }
            var out = [Result<(job: Job, created: Bool), any Error>?](repeating: nil, count: specs.count)
            for await (i, outcome) in group { out[i] = outcome }
            return out.map { $0! }
        }
    }

    @Test("200 submits at once are written in far fewer transactions, each job whole, in its group's turn, every caller told its own id")
    func grouped() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            let pool = schema.makePool(maxConnections: 4)
            defer { Task { await pool.close() } }
            let queue = JobQueue(pool: pool, logger: TestLog.quiet)
            let groups = (0..<5).map { _ in UUID() }
            let specs = (0..<200).map { i in
                Factory.spec(conversation: groups[i % 5], priority: i % 7 == 0 ? .high : .normal, params: ["i": .number(Double(i))])
            }
            let outcomes = await submitAtOnce(queue, specs)
            let jobs = try outcomes.map { try $0.get() }
            let allCreated = jobs.allSatisfy { $0.created }
            #expect(allCreated)
            #expect(Set(jobs.map(\.job.id)).count == 200)
            for (spec, (job, _)) in zip(specs, jobs) {
                let stored = try await queue.job(job.id)
                let same = stored.params == spec.params && stored.groupID == spec.groupID && stored.priority == spec.priority
                #expect(same)
            }
            let transactions = try await schema.pool.int("SELECT count(DISTINCT xmin::text)::int FROM jobs")
            #expect(transactions < 50, "\(transactions) transactions for 200 submits")
            // Within a group and priority, tags follow submit order a step apart: no two share one.
            let ties = try await schema.pool.int("SELECT count(*)::int FROM (SELECT 1 FROM jobs GROUP BY group_id, priority, tag HAVING count(*) > 1) t")
            #expect(ties == 0)
            // Positions count the grouped inserts like any other.
            for (job, _) in jobs.prefix(20) {
                let counted = try await queue.positionByCounting(job.id)
                #expect(try await queue.position(job.id).position == counted.position)
            }
        }
    }

    @Test("a submit the database refuses fails alone, and idempotency keys keep one job per key, in a group or not")
    func ownOutcomes() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            let pool = schema.makePool(maxConnections: 2)
            defer { Task { await pool.close() } }
            // Limits looser than the table's (max_retries ≤ 25): the database refuses 30 after
            // the queue has let it through, the way a value only the database checks would fail.
            var limits = JobLimits()
            limits.maxRetriesRange = 0...100
            let queue = JobQueue(pool: pool, limits: limits, logger: TestLog.quiet)
            let conversation = UUID()
            let earlier = try await queue.submit(Factory.spec(conversation: conversation, key: "taken")).job
            var specs = (0..<60).map { i in Factory.spec(conversation: conversation, params: ["i": .number(Double(i))]) }
            specs[17] = Factory.spec(conversation: conversation, maxRetries: 30)
            for i in [5, 25, 45] { specs[i] = Factory.spec(conversation: conversation, key: "taken") }
            for i in [10, 30, 50] { specs[i] = Factory.spec(conversation: conversation, key: "new") }
            let outcomes = await submitAtOnce(queue, specs)

            #expect(throws: (any Error).self) { try outcomes[17].get() }
            for i in [5, 25, 45] {
                let (job, created) = try outcomes[i].get()
                #expect(job.id == earlier.id && !created)
            }
            let new = try [10, 30, 50].map { try outcomes[$0].get() }
            let oneJob = Set(new.map { $0.job.id }).count == 1 && new.filter { $0.created }.count == 1
            #expect(oneJob)
            let others = Set(0..<60).subtracting([17, 5, 25, 45, 10, 30, 50])
            for i in others { #expect(try outcomes[i].get().created) }
            #expect(try await schema.pool.int("SELECT count(*)::int FROM jobs") == 1 + others.count + 1)
        }
    }
}
