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
            let cursors: [JobListCursor?] = [nil, JobListCursor(at: "2026-12-01 10:00:00.123456+00", id: UUID()), JobListCursor(at: nil, id: UUID())]
            for (group, batch, status) in cases {
                for cursor in cursors {
                    for filter in [JobListFilter(groupID: group, batchID: batch, status: status),
                                   JobListFilter(groupID: group, batchID: batch, status: status, kind: "image.generate", search: "fox")] {
                        // A page's scan is a small part of a big table (here 1,000 of 20,000; 10,000 of 1M in use).
                        let plan = try await QueryPlans.plan(JobSQL.list(filter, after: cursor, limit: 50, scan: 1_000), pool: schema.pool)
                        #expect(!QueryPlans.scans(plan, table: "jobs"), "\(filter) after \(String(describing: cursor)): \(plan.joined(separator: "\n"))")
                    }
                }
            }
        }
    }

    @Test("pages follow each other without a gap or a repeat in every order; kind and search keep the matching jobs, continuing past pages that found none")
    func paging() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let conversation = UUID()
            var ids: [UUID] = []
            for n in 0..<23 {
                let params: [String: JSONValue] = ["prompt": .string(n % 5 == 0 ? "a Heron_50% in reeds \(n)" : "a fox \(n)")]
                let kind = n % 2 == 0 ? "test.script" : "test.other"
                ids.append(try await queue.submit(Factory.spec(conversation: conversation, kind: kind, params: params)).job.id)
            }
            try await JobFactory(schema.pool).finish(Array(ids.prefix(11)), as: .completed)

            func all(_ filter: JobListFilter, limit: Int) async throws -> [UUID] {
                var out: [UUID] = []
                var cursor: JobListCursor?
                repeat {
                    let page = try await queue.list(filter, after: cursor, limit: limit)
                    #expect(page.jobs.count <= limit)
                    out += page.jobs.map(\.id)
                    cursor = page.next.flatMap { JobListCursor($0.description) }  // through its text, as a URL carries it
                } while cursor != nil && out.count < 100
                return out
            }
            for filter in [JobListFilter(), JobListFilter(groupID: conversation), JobListFilter(status: .completed),
                           JobListFilter(status: .pending), JobListFilter(groupID: conversation, status: .pending)] {
                let whole = try await queue.list(filter, limit: 100).jobs.map(\.id)
                #expect(!whole.isEmpty)
                #expect(try await all(filter, limit: 4) == whole, "\(filter)")
            }
            let herons = Set(ids.enumerated().filter { $0.offset % 5 == 0 }.map(\.element))
            #expect(Set(try await all(JobListFilter(search: "heron_50%"), limit: 2)) == herons, "case-insensitive; _ and % are literal")
            #expect(try await queue.list(JobListFilter(search: "heron_5_%")).jobs.isEmpty)
            let others = Set(ids.enumerated().filter { $0.offset % 2 == 1 }.map(\.element))
            #expect(Set(try await all(JobListFilter(groupID: conversation, kind: "test.other"), limit: 3)) == others)
            let both = try await queue.list(JobListFilter(status: .completed, kind: "test.script", search: "HERON"), limit: 50)
            #expect(Set(both.jobs.map(\.id)) == Set([ids[0], ids[10]]))
            #expect(both.read == 11 && both.next == nil, "read every completed job, and the list ended")

            // A moment as a cursor: the jobs submitted (finished, for a finished status) before it.
            #expect(try await queue.list(JobListFilter(), after: JobListCursor(before: Date().addingTimeInterval(-3600))).jobs.isEmpty)
            #expect(try await queue.list(JobListFilter(), after: JobListCursor(before: Date().addingTimeInterval(60)), limit: 100).jobs.count == 23)
            #expect(try await queue.list(JobListFilter(groupID: conversation), after: JobListCursor(before: Date().addingTimeInterval(60)), limit: 100).jobs.count == 23)
            try await JobFactory(schema.pool).finish(Array(ids.suffix(2)), as: .error, ago: .seconds(600))
            let longAgo = try await queue.list(JobListFilter(status: .error), after: JobListCursor(before: Date().addingTimeInterval(-300)))
            #expect(Set(longAgo.jobs.map(\.id)) == Set(ids.suffix(2)))

            await #expect(throws: JobQueueError.self) { try await queue.list(JobListFilter(kind: "Not A Kind")) }
            await #expect(throws: JobQueueError.self) { try await queue.list(JobListFilter(search: "")) }
            #expect(JobListCursor("not a cursor") == nil)
            #expect(JobListCursor("fHx8") == nil)
        }
    }
}
