import Foundation
import ImageJobs
import ImageJobsServer
import JobEngine
import Postgres
import TestSupport
import Testing

/// Every dashboard page against a million pending jobs: each must answer, its statements
/// within the page's statement timeout (a page that read every job would time out and answer
/// 503, not 200). How fast they answer is measured by the benchmark, not here.
@Suite("the dashboard at a million jobs", .enabled(if: TestDatabase.isConfigured))
struct DashboardScaleTests {
    @Test("every page answers 200 with 1,000,000 pending and 100,000 finished jobs")
    func everyPage() async throws {
        try await withServer { api, schema, queue in
            try await QueryPlans.seedLargeQueue(schema.pool, pending: 1_000_000, finished: 100_000)
            let (admin, _) = try await api.keys.create(name: "operator", scopes: [.admin])
            let cookie = try await DashboardTests.signIn(api, key: admin)
            let someJob = try #require(try await queue.list(status: .error, limit: 1).first)
            let conversation = someJob.groupID.lowercasedString
            let pages = [
                "/", "/jobs", "/jobs?status=pending", "/jobs?status=running", "/jobs?status=completed", "/jobs?status=error",
                "/jobs?status=cancelled", "/jobs?conversation=\(conversation)", "/jobs?conversation=\(conversation)&status=error",
                "/jobs?q=heron", "/jobs?status=pending&kind=image.generate&q=lighthouse",
                "/jobs/\(someJob.id.lowercasedString)", "/conversations", "/batches", "/workers", "/scheduling", "/webhooks",
            ]
            for path in pages {
                let answer = try await api.send("GET", path, key: nil, headers: ["Cookie": cookie])
                #expect(answer.status == 200, "\(path): \(String(decoding: answer.body.prefix(300), as: UTF8.self))")
            }
            let conversations = String(decoding: try await api.send("GET", "/conversations", key: nil, headers: ["Cookie": cookie]).body, as: UTF8.self)
            #expect(conversations.components(separatedBy: "<tr>").count - 2 == 50, "the 50 conversations active last")
        }
    }
}
