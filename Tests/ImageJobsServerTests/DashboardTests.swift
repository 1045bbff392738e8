import Foundation
import HTTPTypes
import ImageJobs
import JobEngine
import Postgres
import TestSupport
import Testing

@testable import ImageJobsServer

/// The dashboard over real sockets, as a browser without JavaScript meets it: sign-in, the
/// session cookie, pages, form tokens on every action, and the overview's event stream.
@Suite("the dashboard", .enabled(if: TestDatabase.isConfigured))
struct DashboardTests {
    /// Signs in with `key` and returns the session's `Cookie` header value.
    static func signIn(_ api: APIClient, key: String) async throws -> String {
        let answer = try await api.post("/login", form: ["key": key])
        #expect(answer.status == 303)
        let setCookie = try #require(answer.headers["Set-Cookie"])
        return String(try #require(setCookie.split(separator: ";").first))
    }

    /// The form token a page carries.
    static func formToken(_ html: String) throws -> String {
        let marker = #"name="csrf" value=""#
        let start = try #require(html.range(of: marker)).upperBound
        return String(html[start...].prefix { $0 != "\"" })
    }

    func image(_ conversation: UUID = UUID(), prompt: String = "a lighthouse at dusk") throws -> JobSpec {
        try ImageJob.spec(conversationID: conversation, parameters: .init(prompt: prompt, width: 64, height: 64))
    }

    @Test("sign-in takes an admin key only, sets an HttpOnly SameSite=Strict cookie, and a revoked key ends the session")
    func signIn() async throws {
        try await withServer { api, _, queue in
            let (admin, adminInfo) = try await api.keys.create(name: "operator", scopes: [.admin])
            let (reader, _) = try await api.keys.create(name: "viewer", scopes: [.read])
            let job = try await queue.submit(try image()).job

            let anonymous = try await api.send("GET", "/", key: nil)
            #expect(anonymous.status == 303 && anonymous.headers["Location"] == "/login")
            let form = try await api.send("GET", "/login", key: nil)
            let formPage = String(decoding: form.body, as: UTF8.self)
            #expect(form.status == 200 && formPage.contains(#"name="key""#))
            #expect(!formPage.contains("Sign out"), "no session, no sign-out form")

            let wrong = try await api.post("/login", form: ["key": "ijk_" + String(repeating: "ab", count: 24)])
            #expect(wrong.status == 401 && wrong.headers["Set-Cookie"] == nil)
            #expect(!String(decoding: wrong.body, as: UTF8.self).contains("abababab"), "the page never repeats the key")
            let notAdmin = try await api.post("/login", form: ["key": reader])
            #expect(notAdmin.status == 403 && notAdmin.headers["Set-Cookie"] == nil)

            let signedIn = try await api.post("/login", form: ["key": admin])
            let setCookie = try #require(signedIn.headers["Set-Cookie"])
            #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict") && setCookie.contains("Path=/"))
            #expect(!setCookie.contains("Secure"), "plain HTTP: a Secure cookie would never come back")
            let proxied = try await api.post("/login", form: ["key": admin], headers: ["X-Forwarded-Proto": "https"])
            #expect(proxied.headers["Set-Cookie"]?.contains("Secure") == true)

            let cookie = try await Self.signIn(api, key: admin)
            let overview = try await api.send("GET", "/", key: nil, headers: ["Cookie": cookie])
            #expect(overview.status == 200)
            #expect(overview.headers["Content-Security-Policy"]?.contains("default-src 'self'") == true)
            #expect(overview.headers["Cache-Control"] == "no-store")
            let html = String(decoding: overview.body, as: UTF8.self)
            #expect(html.contains(job.id.lowercasedString), "the queued job is listed next in claim order")
            #expect(!html.contains("http://") && !html.contains("https://"), "the page loads nothing from elsewhere")
            for asset in ["/assets/dashboard.css", "/assets/dashboard.js"] {
                #expect(html.contains(asset))
                #expect(try await api.send("GET", asset, key: nil).status == 200)
            }

            #expect(try await api.keys.revoke(prefix: adminInfo.prefix))
            let revoked = try await api.send("GET", "/", key: nil, headers: ["Cookie": cookie])
            #expect(revoked.status == 303 && revoked.headers["Location"] == "/login")
        }
    }

    @Test("every action needs the page's form token: without it nothing changes; with it cancel, retry, pause, resume and sign-out work")
    func actions() async throws {
        try await withServer { api, schema, queue in
            let (admin, _) = try await api.keys.create(name: "operator", scopes: [.admin])
            let cookie = try await Self.signIn(api, key: admin)
            let page = try await api.send("GET", "/", key: nil, headers: ["Cookie": cookie])
            let token = try Self.formToken(String(decoding: page.body, as: UTF8.self))

            for form in [["kind": "image.generate"], ["kind": "image.generate", "csrf": (token.first == "0" ? "1" : "0") + token.dropFirst()]] {
                let refused = try await api.post("/pause", form: form, cookie: cookie)
                #expect(refused.status == 403)
            }
            #expect(try await api.post("/pause", form: ["kind": "image.generate", "csrf": token]).status == 303, "no cookie: sent to sign in")
            #expect(try await queue.schedulingSettings().paused.isEmpty, "nothing was paused by a refused form")

            let paused = try await api.post("/pause", form: ["kind": "image.generate", "csrf": token], cookie: cookie)
            #expect(paused.status == 303 && paused.headers["Location"] == "/")
            #expect(try await queue.schedulingSettings().paused == ["image.generate"])
            let overview = String(decoding: try await api.send("GET", "/", key: nil, headers: ["Cookie": cookie]).body, as: UTF8.self)
            #expect(overview.contains(#"id="paused""#))
            #expect(try await api.post("/resume", form: ["kind": "image.generate", "csrf": token], cookie: cookie).status == 303)
            #expect(try await queue.schedulingSettings().paused.isEmpty)

            let pending = try await queue.submit(try image()).job
            #expect(try await api.post("/jobs/\(pending.id.lowercasedString)/cancel", form: [:], cookie: cookie).status == 403)
            #expect(try await queue.job(pending.id).status == .pending)
            let cancelled = try await api.post("/jobs/\(pending.id.lowercasedString)/cancel", form: ["csrf": token], cookie: cookie)
            #expect(cancelled.status == 303 && cancelled.headers["Location"] == "/jobs/\(pending.id.lowercasedString)")
            #expect(try await queue.job(pending.id).status == .cancelled)
            let again = try await api.post("/jobs/\(pending.id.lowercasedString)/cancel", form: ["csrf": token], cookie: cookie)
            #expect(again.status == 409, "a finished job cannot be cancelled; the page says so")

            let failed = try await queue.submit(try image()).job
            try await JobFactory(schema.pool).finish([failed.id], as: .error)
            let jobPage = String(decoding: try await api.send("GET", "/jobs/\(failed.id.lowercasedString)", key: nil, headers: ["Cookie": cookie]).body, as: UTF8.self)
            #expect(jobPage.contains(#"id="retry""#) && !jobPage.contains(#"id="cancel""#))
            #expect(jobPage.contains(#"href="/jobs?conversation=\#(failed.groupID.lowercasedString)""#), "the conversation's jobs are a click away")
            #expect(try await api.post("/jobs/\(failed.id.lowercasedString)/retry", form: ["csrf": token], cookie: cookie).status == 303)
            #expect(try await queue.job(failed.id).status == .pending)

            #expect(try await api.send("GET", "/jobs/\(UUID().lowercasedString)", key: nil, headers: ["Cookie": cookie]).status == 404)
            #expect(try await api.send("GET", "/jobs/not-an-id", key: nil, headers: ["Cookie": cookie]).status == 400)

            // The cookie reads the API (the pages load images and streams from it) but never writes.
            #expect(try await api.send("GET", "/v1/jobs/\(failed.id.lowercasedString)", key: nil, headers: ["Cookie": cookie]).status == 200)
            let item = JSONValue.object(["conversation_id": .string(UUID().lowercasedString), "prompt": .string("by cookie")])
            #expect(try await api.send("POST", "/v1/jobs", json: item, key: nil, headers: ["Cookie": cookie]).status == 401)

            let signedOut = try await api.post("/logout", form: ["csrf": token], cookie: cookie)
            #expect(signedOut.status == 303 && signedOut.headers["Location"] == "/login")
            #expect(signedOut.headers["Set-Cookie"]?.contains("Max-Age=0") == true)
        }
    }

    @Test("the jobs page filters by status, conversation and batch, and refuses a filter it cannot read")
    func jobsPage() async throws {
        try await withServer { api, schema, queue in
            let (admin, _) = try await api.keys.create(name: "operator", scopes: [.admin])
            let cookie = try await Self.signIn(api, key: admin)
            let conversation = UUID()
            let batch = try await queue.submitBatch([try image(conversation), try image(conversation)], groupID: conversation)
            let other = try await queue.submit(try image()).job
            let failed = try await queue.submit(try image()).job
            try await JobFactory(schema.pool).finish([failed.id], as: .error)
            func listed(_ query: String) async throws -> (status: Int, ids: Set<String>) {
                let answer = try await api.send("GET", "/jobs" + query, key: nil, headers: ["Cookie": cookie])
                let html = String(decoding: answer.body, as: UTF8.self)
                let ids = html.components(separatedBy: #"data-job=""#).dropFirst().map { String($0.prefix(36)) }
                return (answer.status, Set(ids))
            }
            let all = Set((batch.jobIDs + [other.id, failed.id]).map(\.lowercasedString))
            #expect(try await listed("") == (200, all))
            #expect(try await listed("?status=error") == (200, [failed.id.lowercasedString]))
            #expect(try await listed("?conversation=\(conversation.lowercasedString)") == (200, Set(batch.jobIDs.map(\.lowercasedString))))
            #expect(try await listed("?batch=\(batch.batchID.lowercasedString)&status=pending") == (200, Set(batch.jobIDs.map(\.lowercasedString))))
            #expect(try await listed("?batch=\(batch.batchID.lowercasedString)&status=error") == (200, []))
            #expect(try await listed("?status=done").status == 422)
            #expect(try await listed("?conversation=not-an-id").status == 422)
        }
    }

    @Test("the jobs page pages through a long list by its Older link, finds words of the parameters, filters by kind, and refuses a bad cursor")
    func jobsPaging() async throws {
        try await withServer { api, schema, queue in
            let (admin, _) = try await api.keys.create(name: "operator", scopes: [.admin])
            let cookie = try await Self.signIn(api, key: admin)
            let conversation = UUID()
            var specs = (0..<129).map { n in try! image(conversation, prompt: "a fox number \(n)") }
            specs.append(try image(conversation, prompt: "a grey heron at dawn"))
            let batch = try await queue.submitBatch(specs, groupID: conversation)
            func get(_ path: String) async throws -> (status: Int, html: String, ids: [String]) {
                let answer = try await api.send("GET", path, key: nil, headers: ["Cookie": cookie])
                let html = String(decoding: answer.body, as: UTF8.self)
                return (answer.status, html, html.components(separatedBy: #"data-job=""#).dropFirst().map { String($0.prefix(36)) })
            }
            func older(_ html: String) -> String? {
                guard let link = html.range(of: #"id="older""#),
                    let r = html.range(of: #"<a href=""#, options: .backwards, range: html.startIndex..<link.lowerBound)
                else { return nil }
                return String(html[r.upperBound...].prefix { $0 != "\"" }).replacingOccurrences(of: "&amp;", with: "&")
            }
            let first = try await get("/jobs?conversation=\(conversation.lowercasedString)")
            #expect(first.status == 200 && first.ids.count == 100)
            let next = try #require(older(first.html), "a full page links to the older jobs")
            let second = try await get(next)
            #expect(second.ids.count == 30, "\(next)")
            #expect(older(second.html) == nil)
            #expect(second.html.contains(#"id="newest""#))
            #expect(Set(first.ids + second.ids) == Set(batch.jobIDs.map(\.lowercasedString)))

            let heron = try await get("/jobs?q=HERON")
            #expect(heron.ids == [batch.jobIDs[129].lowercasedString])
            #expect(heron.html.contains("130 read to find them"))
            #expect(try await get("/jobs?kind=image.generate&status=pending").ids.count == 100)
            #expect(try await get("/jobs?kind=test.script").ids.isEmpty)
            #expect(try await get("/jobs?until=2020-01-01T00:00:00Z").ids.isEmpty)
            let later = try await get("/jobs?until=2099-01-01T00:00:00Z")
            #expect(later.ids.count == 100 && later.html.contains("before 2099-01-01T00:00:00Z"))
            #expect(try await get("/jobs?until=yesterday").status == 422)
            #expect(try await get("/jobs?before=garbage").status == 422)
            #expect(try await get("/jobs?kind=Not%20a%20kind").status == 422)
            _ = schema
        }
    }

    @Test("bulk retry counts the jobs in error the filters select and changes nothing until confirmed; then retries exactly those")
    func bulkRetry() async throws {
        try await withServer { api, schema, queue in
            let (admin, _) = try await api.keys.create(name: "operator", scopes: [.admin])
            let cookie = try await Self.signIn(api, key: admin)
            let mine = UUID(), other = UUID()
            var failed: [UUID] = []
            for n in 0..<3 { failed.append(try await queue.submit(try image(mine, prompt: "a kite \(n)")).job.id) }
            let elsewhere = try await queue.submit(try image(other)).job.id
            let untouched = try await queue.submit(try image(mine)).job.id
            try await JobFactory(schema.pool).finish(failed + [elsewhere], as: .error)
            func statuses() async throws -> [JobStatus] { try await (failed + [elsewhere, untouched]).asyncMap { try await queue.job($0).status } }

            let listing = try await api.send("GET", "/jobs?status=error&conversation=\(mine.lowercasedString)", key: nil, headers: ["Cookie": cookie])
            let html = String(decoding: listing.body, as: UTF8.self)
            #expect(html.contains(#"id="retry-all""#))
            let csrf = try Self.formToken(html)

            let refused = try await api.post("/jobs/retry", form: ["conversation": mine.lowercasedString, "confirm": "yes"], cookie: cookie)
            #expect(refused.status == 403, "no form token")
            let asked = try await api.post("/jobs/retry", form: ["csrf": csrf, "conversation": mine.lowercasedString], cookie: cookie)
            #expect(asked.status == 200)
            #expect(String(decoding: asked.body, as: UTF8.self).contains("3 jobs in error in conversation \(mine.lowercasedString)"))
            #expect(try await statuses() == [.error, .error, .error, .error, .pending], "counting changes nothing")

            let done = try await api.post("/jobs/retry", form: ["csrf": csrf, "conversation": mine.lowercasedString, "confirm": "yes"], cookie: cookie)
            #expect(done.status == 303)
            #expect(try await statuses() == [.pending, .pending, .pending, .error, .pending])
            let bad = try await api.post("/jobs/retry", form: ["csrf": csrf, "batch": "not-an-id"], cookie: cookie)
            #expect(bad.status == 422)
        }
    }

    @Test("the conversations, batches, workers and scheduling pages show the queue's own rows, ids linked to their jobs")
    func reportPages() async throws {
        try await withServer { api, schema, queue in
            let (admin, _) = try await api.keys.create(name: "operator", scopes: [.admin])
            let cookie = try await Self.signIn(api, key: admin)
            let conversation = UUID()
            let batch = try await queue.submitBatch([try image(conversation), try image(conversation)], groupID: conversation)
            try await JobFactory(schema.pool).finish([batch.jobIDs[0]], as: .completed)
            try await schema.pool.query("""
                INSERT INTO workers (id, host, pid, concurrency, kinds, started_at, last_seen_at)
                VALUES ('w-dashboard', 'render-7', 4242, 3, '{image.generate}', now(), now())
                """)
            let capped = UUID()
            try await queue.setLimits(.kind("image.generate"), perGroup: .set(4), rate: .set(JobRate(count: 50, period: .seconds(60))))
            try await queue.setLimits(.group(capped), perGroup: .set(1))
            _ = try await queue.pause(kind: "image.upscale")

            func page(_ path: String) async throws -> String {
                let answer = try await api.send("GET", path, key: nil, headers: ["Cookie": cookie])
                #expect(answer.status == 200, "\(path)")
                return String(decoding: answer.body, as: UTF8.self)
            }
            let conversations = try await page("/conversations")
            #expect(conversations.contains(#"<a href="/jobs?conversation=\#(conversation.lowercasedString)">"#))
            // jobs 2, pending 1, running 0, completed 1
            #expect(conversations.contains("<td>2</td><td>1</td><td>0</td><td>1</td>"), "\(conversations)")
            let batches = try await page("/batches")
            #expect(batches.contains(#"<a href="/jobs?batch=\#(batch.batchID.lowercasedString)">"#))
            #expect(batches.contains("<td>0.5000</td>"))
            let workers = try await page("/workers")
            #expect(workers.contains("w-dashboard") && workers.contains("render-7") && workers.contains("<td>live</td>"))
            let scheduling = try await page("/scheduling")
            #expect(scheduling.contains("kind image.generate") && scheduling.contains("50 per 60.0 seconds"))
            #expect(scheduling.contains("conversation \(capped.lowercasedString)"))
            #expect(scheduling.contains("image.upscale") && scheduling.contains(#"id="fair-share">on"#))

            // Without a session, each page sends the browser to sign in.
            for path in ["/conversations", "/batches", "/workers", "/scheduling"] {
                let answer = try await api.send("GET", path, key: nil)
                #expect(answer.status == 303 && answer.headers["Location"] == "/login", "\(path)")
            }
        }
    }

    @Test("the overview's stream sends its live part when it changes: a submitted job appears, then as finished")
    func liveOverview() async throws {
        try await withServer { api, schema, queue in
            let (admin, _) = try await api.keys.create(name: "operator", scopes: [.admin])
            let cookie = try await Self.signIn(api, key: admin)
            let anonymous = try EventStreamClient(port: api.port, path: "/dashboard/events", headers: [:])
            var none = anonymous.events.makeAsyncIterator()
            #expect(await anonymous.next(timeout: .seconds(5), iterator: &none) == nil)
            #expect(anonymous.statusLine.contains("303"))

            let stream = try EventStreamClient(port: api.port, path: "/dashboard/events", headers: ["Cookie": cookie])
            defer { stream.disconnect() }
            var events = stream.events.makeAsyncIterator()
            let first = try #require(await stream.next(iterator: &events))
            #expect(first.event == "overview" && first.data.contains("<h2>Queue</h2>"))

            let job = try await queue.submit(try image()).job
            let row = #"data-job="\#(job.id.lowercasedString)""#
            func waitFor(_ text: String) async -> Bool {
                for _ in 0..<10 {
                    guard let event = await stream.next(iterator: &events) else { return false }
                    if event.data.contains(row) && event.data.contains(text) { return true }
                }
                return false
            }
            #expect(await waitFor("status-pending"))
            try await JobFactory(schema.pool).finish([job.id])
            #expect(await waitFor("status-completed"))
        }
    }
}

@Suite("the API's error mapping")
struct APIErrorMappingTests {
    @Test("an action the server's database role may not take is a 403 saying so, not a 500")
    func notPermitted() {
        let answer = APIError.from(JobQueueError(.notPermitted, "the database role may not do this: permission denied for table job_pauses"))
        #expect(answer.status == .forbidden)
        #expect(answer.message.contains("database role may not do this") && !answer.message.contains("job_pauses"))
    }

    @Test("a connection the database dropped (a restart) is a 503 to retry, wherever it was met, not a 500")
    func databaseGone() {
        let answer = APIError.from(PGError(.connectionClosed, message: "server closed the connection unexpectedly"))
        #expect(answer.status == .serviceUnavailable)
    }
}

extension Sequence where Element: Sendable {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
