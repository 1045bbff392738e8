import Foundation
import Postgres
import TestSupport
import Testing

@testable import JobEngine

@Suite("the queue's overview", .enabled(if: TestDatabase.isConfigured))
struct OverviewTests {
    /// The overview's figures counted row by row, for comparison.
    func counted(_ pool: PGPool) async throws -> [JobPriority: (queued: Int, held: Int, running: Int)] {
        var out: [JobPriority: (Int, Int, Int)] = [:]
        for row in try await pool.query("""
            SELECT priority,
                   count(*) FILTER (WHERE status = 'pending' AND tag IS NOT NULL) AS queued,
                   count(*) FILTER (WHERE status = 'pending' AND tag IS NULL) AS held,
                   count(*) FILTER (WHERE status = 'running') AS running
            FROM jobs GROUP BY priority
            """) {
            out[try row.decode("priority")] = (try row.decode("queued"), try row.decode("held"), try row.decode("running"))
        }
        return out
    }

    func figures(_ overview: QueueOverview) -> [JobPriority: (queued: Int, held: Int, running: Int)] {
        Dictionary(uniqueKeysWithValues: overview.priorities.filter { $0.queued + $0.held + $0.running > 0 }.map { ($0.priority, ($0.queued, $0.held, $0.running)) })
    }

    @Test("counts per priority match a count of the rows, before and after the counts are folded; the lists show the edges of the queue")
    func figuresMatchRows() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            for _ in 0..<5 { _ = try await queue.submit(Factory.spec(priority: .high)) }
            for _ in 0..<7 { _ = try await queue.submit(Factory.spec(priority: .normal)) }
            for _ in 0..<3 { _ = try await queue.submit(Factory.spec(priority: .low)) }
            for _ in 0..<2 {
                var later = Factory.spec(priority: .normal)
                later.runAt = Date().addingTimeInterval(3600)
                _ = try await queue.submit(later)
            }
            let claimed = try await claim(schema.pool, limit: 4)
            _ = try await schema.pool.query(JobSQL.complete(ids: [claimed[0].id, claimed[1].id], attempts: [claimed[0].attempt, claimed[1].attempt]))
            _ = try await fail(schema.pool, claimed[2], permanent: true)

            let before = try await queue.overview()
            let rows = try await counted(schema.pool)
            #expect(figures(before).mapValues { [$0.queued, $0.held, $0.running] } == rows.mapValues { [$0.queued, $0.held, $0.running] })
            #expect(before.priorities.map(\.priority) == [.high, .normal, .low])
            #expect(before.running.map(\.id) == [claimed[3].id])
            #expect(before.nextUp.first?.priority == .high && before.nextUp.count == 10)
            #expect(Set(before.recentlyFinished.map(\.id)) == Set(claimed[0...2].map(\.id)))
            #expect(before.completedPerMinute.reduce(0) { $0 + $1.completed } == 2)
            #expect(!before.heldCapped)

            _ = try await Maintenance(pool: schema.pool, configuration: MaintenanceConfiguration(), logger: TestLog.quiet).runOnce()
            let after = try await queue.overview()
            #expect(figures(after).mapValues { [$0.queued, $0.held, $0.running] } == rows.mapValues { [$0.queued, $0.held, $0.running] })
            #expect(after.completedPerMinute.reduce(0) { $0 + $1.completed } == 2)

            _ = try await queue.pause(kind: "image.generate")
            let capped = try await queue.overview(heldCap: 1)
            #expect(capped.heldCapped)
            #expect(capped.paused == ["image.generate"])
        }
    }

    @Test("no overview statement scans the jobs table: each has an index to use, on a table shaped like a busy queue's")
    func indexed() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            try await QueryPlans.seedBusyQueue(schema.pool)
            let statements = [
                OverviewSQL.counts(gatedCap: 10_000), OverviewSQL.completedPerMinute(), OverviewSQL.running(limit: 10),
                OverviewSQL.nextUp(limit: 10), OverviewSQL.recentlyFinished(limit: 10), OverviewSQL.paused(),
            ]
            for statement in statements {
                let plan = try await QueryPlans.plan(statement, pool: schema.pool)
                #expect(!QueryPlans.scans(plan, table: "jobs"), "\(statement.name ?? ""): \(plan.joined(separator: "\n"))")
            }
        }
    }
}
