import Foundation
import Postgres
import TestSupport
import Testing

@testable import JobEngine

@Suite("listing jobs", .enabled(if: TestDatabase.isConfigured))
struct ListTests {
    @Test("each filter lists the right jobs, most recent first: by submit time, by finish time for finished jobs, by id otherwise")
    func filtersAndOrder() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let conversation = UUID()
            var mine: [UUID] = []
            for _ in 0..<4 {
                mine.append(try await queue.submit(Factory.spec(conversation: conversation)).job.id)
                try await Task.sleep(for: .milliseconds(3))  // ids are ordered to the millisecond
            }
            let batch = try await queue.submitBatch((0..<3).map { _ in Factory.spec(conversation: conversation) }, groupID: conversation)
            var others: [UUID] = []
            for _ in 0..<5 {
                others.append(try await queue.submit(Factory.spec()).job.id)
                try await Task.sleep(for: .milliseconds(3))
            }
            let factory = JobFactory(schema.pool)
            try await factory.finish([others[0]], as: .error, ago: .seconds(30))
            try await factory.finish([others[1]], as: .error, ago: .seconds(10))
            try await factory.finish([others[2]], as: .completed)
            try await factory.finish([mine[0]], as: .cancelled)

            let conversationJobs = try await queue.list(groupID: conversation).map(\.id)
            #expect(Set(conversationJobs) == Set(mine + batch.jobIDs))
            #expect(Array(conversationJobs.suffix(4)) == mine.reversed(), "submitted before the batch, newest first")
            #expect(Set(try await queue.list(batchID: batch.batchID).map(\.id)) == Set(batch.jobIDs))
            #expect(try await queue.list(groupID: conversation, status: .cancelled).map(\.id) == [mine[0]])
            #expect(try await queue.list(status: .error).map(\.id) == [others[1], others[0]], "finished last first")
            #expect(try await queue.list(status: .completed).map(\.id) == [others[2]])
            #expect(try await queue.list(status: .cancelled).map(\.id) == [mine[0]])
            #expect(try await queue.list(status: .pending, limit: 2).map(\.id) == [others[4], others[3]])
            #expect(try await queue.list(limit: 1).map(\.id) == [others[4]])
            let claimed = try await claim(schema.pool, limit: 2).map(\.id)
            #expect(Set(try await queue.list(status: .running).map(\.id)) == Set(claimed))
        }
    }

    @Test("no list scans the jobs table: each filter has an index to use, on a table shaped like a busy queue's")
    func indexed() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            try await QueryPlans.seedBusyQueue(schema.pool)
            let cases: [(UUID?, UUID?, JobStatus?)] = [
                (nil, nil, nil), (UUID(), nil, nil), (UUID(), nil, .error), (nil, UUID(), nil), (nil, UUID(), .completed),
            ] + JobStatus.allCases.map { (nil, nil, $0) }
            for (group, batch, status) in cases {
                let plan = try await QueryPlans.plan(
                    JobSQL.list(groupID: group, batchID: batch, status: status, limit: 50), pool: schema.pool)
                #expect(!QueryPlans.scans(plan, table: "jobs"), "\(String(describing: status)) group \(group != nil) batch \(batch != nil): \(plan.joined(separator: "\n"))")
            }
        }
    }
}
