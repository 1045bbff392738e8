import Foundation
import ImageJobs
import ImageJobsServer
import JobEngine
import TestSupport
import Testing

/// The dashboard in a real headless Chromium: what an operator does, with the page's own
/// scripts and event streams running. With `IMAGEJOBS_SCREENSHOT_DIR` set, the main pages are
/// saved there as PNGs (docs/ holds the ones the README shows).
@Suite("the dashboard in a browser", .enabled(if: TestDatabase.isConfigured))
struct DashboardBrowserTests {
    func image(_ prompt: String, size: Int = 96) throws -> JobSpec {
        try ImageJob.spec(conversationID: UUID(), parameters: .init(prompt: prompt, width: size, height: size))
    }

    func save(_ browser: Browser, _ name: String) async throws {
        guard let dir = ProcessInfo.processInfo.environment["IMAGEJOBS_SCREENSHOT_DIR"] else { return }
        try await browser.screenshot().write(to: URL(fileURLWithPath: dir).appendingPathComponent("\(name).png"))
    }

    @Test("sign in; a submitted job appears live and completes live; its page shows the image; retry a failed job; pause and resume")
    func operatorSession() async throws {
        try await withServer { api, schema, queue in
            let browser = try await Browser.start()
            do {
                try await session(browser, api, schema, queue)
            } catch {
                Issue.record("browser session failed at \(try await browser.url()): \(error)")
            }
            await browser.quit()
        }
    }

    func session(_ browser: Browser, _ api: APIClient, _ schema: TestSchema, _ queue: JobQueue) async throws {
        let (key, _) = try await api.keys.create(name: "operator", scopes: [.admin])
        try await browser.open(api.base + "/")
        #expect(try await browser.url() == api.base + "/login", "not signed in: sent to the form")
        try await browser.type("#key", key)
        try await browser.click(".login button[type=submit]")
        let signedIn = try await eventually(timeout: .seconds(15)) { try await browser.text("h1") == "Overview" }
        let shown = try await browser.text("main") ?? ""
        #expect(signedIn, "the page shows: \(shown)")

        // Submitted after the page loaded: only the live stream can show it.
        let job = try await queue.submit(try image("a lighthouse at dusk")).job
        let row = "#next [data-job=\"\(job.id.lowercasedString)\"]"
        #expect(try await eventually(timeout: .seconds(15)) { try await browser.text(row) != nil }, "the new job appears without a reload")

        let worker = Worker(
            pool: schema.makePool(), handlers: [ImageJobHandler(generator: ProceduralGenerator())], configuration: fastConfiguration(),
            logger: TestLog.quiet)
        let running = Task { try await worker.run() }
        for n in 0..<5 { _ = try await queue.submit(try image("a kite over dunes \(n)")) }
        let finished = "#finished [data-job=\"\(job.id.lowercasedString)\"] .status-completed"
        #expect(try await eventually(timeout: .seconds(15)) { try await browser.text(finished) != nil }, "its completion appears without a reload")
        _ = try await eventually { try await queue.overview().priorities.allSatisfy { $0.queued + $0.running == 0 } }
        running.cancel()
        _ = await running.result
        for n in 0..<3 { _ = try await queue.submit(try image("a harbour in fog \(n)")) }
        #expect(try await eventually(timeout: .seconds(15)) { try await browser.text("#running .empty") != nil }, "the running jobs' end appears")
        #expect(try await eventually(timeout: .seconds(15)) { try await browser.run("return document.querySelectorAll('.chart rect').length").doubleValue ?? 0 > 0 })
        try await save(browser, "dashboard-overview")

        try await browser.click("#finished a[href=\"/jobs/\(job.id.lowercasedString)\"]")
        #expect(try await eventually(timeout: .seconds(15)) { try await browser.text("#status") == "completed" })
        let imageShown = try await eventually(timeout: .seconds(15)) {
            try await browser.run("const i = document.getElementById('image'); return i !== null && i.complete && i.naturalWidth").doubleValue == 96
        }
        #expect(imageShown, "the job's page shows its PNG, loaded with the session cookie")
        try await save(browser, "dashboard-job")

        let failed = try await queue.submit(try image("a storm at sea")).job
        try await JobFactory(schema.pool).finish([failed.id], as: .error)
        try await browser.open(api.base + "/jobs/\(failed.id.lowercasedString)")
        #expect(try await browser.text("#status") == "error")
        try await browser.click("#retry")
        #expect(try await eventually(timeout: .seconds(15)) { try await browser.text("#status") == "pending" })
        #expect(try await queue.job(failed.id).status == .pending)

        try await browser.open(api.base + "/")
        try await browser.type("#pause-kind", ImageJob.kind)
        try await browser.click("#pause")
        #expect(try await eventually(timeout: .seconds(15)) { try await browser.text("#paused")?.contains(ImageJob.kind) == true })
        #expect(try await queue.schedulingSettings().paused == [ImageJob.kind])
        try await browser.click("#paused button.resume")
        #expect(try await eventually(timeout: .seconds(15)) { try await browser.text("#paused") == nil })
        #expect(try await queue.schedulingSettings().paused.isEmpty)
    }
}
