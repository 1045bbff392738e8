import Foundation
import HTTPTypes
import Hummingbird
import ImageJobs
import JobEngine
import Logging
import Mustache

/// The dashboard at `/` of the API server: server-rendered pages for people with an admin key.
/// The overview is live over Server-Sent Events from the server's one shared feed (one read a
/// tick, whatever the number of viewers); a job's page follows the job's own event stream.
/// Actions are form posts carrying the session's form token.
struct Dashboard: Sendable {
    let queue: JobQueue
    let keys: APIKeys
    let feed: JobFeed
    let maxBodyBytes: Int
    let logger: Logger

    func register(on router: Router<BasicRequestContext>) {
        router.get("assets/dashboard.css") { _, _ in Self.asset(DashboardTemplates.stylesheet, type: "text/css; charset=utf-8") }
        router.get("assets/dashboard.js") { _, _ in Self.asset(DashboardTemplates.script, type: "text/javascript; charset=utf-8") }
        router.get("login") { _, _ in Self.page("Sign in", "login", [:], csrf: nil) }
        router.post("login") { request, _ in await self.signIn(request) }
        router.post("logout") { request, _ in
            await self.action(request) { _ in
                var response = Self.redirect("/login")
                response.setCookie(DashboardSession.expiredCookie(request: request))
                return response
            }
        }
        router.get("/") { request, _ in await self.page(request) { csrf in try await self.overviewPage(csrf: csrf) } }
        router.get("dashboard/events") { request, _ in await self.page(request) { csrf in self.overviewEvents(csrf: csrf) } }
        router.get("jobs") { request, _ in await self.page(request) { csrf in try await self.jobsPage(request, csrf: csrf) } }
        router.get("jobs/:id") { request, context in
            await self.page(request) { csrf in try await self.jobPage(try APIServer.id(context, "id"), csrf: csrf) }
        }
        for page in ReportPage.all {
            router.get(RouterPath(stringLiteral: page.path)) { request, _ in
                await self.page(request) { csrf in
                    let rows = try await Reports.read(
                        views: [page.view], window: .seconds(3600), statementTimeout: .seconds(2), pool: self.queue.pool)[0]
                    return Self.page(page.title, "report", ReportView(title: page.title, note: page.note, rows: rows), csrf: csrf)
                }
            }
        }
        router.get("scheduling") { request, _ in
            await self.page(request) { csrf in
                Self.page("Scheduling", "scheduling", SchedulingView(try await self.queue.schedulingSettings(), csrf: csrf), csrf: csrf)
            }
        }
        router.get("webhooks") { request, _ in
            await self.page(request) { csrf in
                let table = DeliveryTableView(try await Webhooks(pool: self.queue.pool).deliveries(limit: 100))
                return Self.page("Webhooks", "webhooks", ["table": table, "count": table.count], csrf: csrf)
            }
        }
        router.post("jobs/:id/cancel") { request, context in
            await self.action(request) { _ in
                let id = try APIServer.id(context, "id")
                _ = try await self.queue.cancel(id)
                return Self.redirect("/jobs/\(id.lowercasedString)")
            }
        }
        router.post("jobs/:id/retry") { request, context in
            await self.action(request) { _ in
                let id = try APIServer.id(context, "id")
                try await self.queue.retry(id)
                return Self.redirect("/jobs/\(id.lowercasedString)")
            }
        }
        router.post("jobs/retry") { request, _ in await self.action(request) { form in try await self.bulkRetry(form) } }
        router.post("pause") { request, _ in
            await self.action(request) { form in
                _ = try await self.queue.pause(kind: Self.kind(form))
                return Self.redirect("/")
            }
        }
        router.post("resume") { request, _ in
            await self.action(request) { form in
                _ = try await self.queue.resume(kind: Self.kind(form))
                return Self.redirect("/")
            }
        }
    }

    // MARK: Sign-in, pages and actions

    struct SignInForm: Decodable { var key: String }

    /// `POST /login`: a key with the admin scope sets the session cookie; any other key gets the
    /// form again with the reason (never the key).
    func signIn(_ request: Request) async -> Response {
        do {
            let form: SignInForm = try await Self.form(request, maxBytes: maxBodyBytes)
            let key = form.key.trimmingCharacters(in: .whitespacesAndNewlines)
            guard let scopes = try await keys.caller(ofKey: key)?.scopes else {
                return Self.page("Sign in", "login", ["error": "That key is not a valid, unrevoked API key."], csrf: nil, status: .unauthorized)
            }
            guard APIScope.admin.isGranted(by: scopes) else {
                return Self.page("Sign in", "login", ["error": "That key lacks the admin scope the dashboard needs."], csrf: nil, status: .forbidden)
            }
            var response = Self.redirect("/")
            response.setCookie(DashboardSession.cookie(key: key, request: request))
            return response
        } catch {
            return failure(error, request)
        }
    }

    /// A page for a signed-in admin, given the session's form token; anyone else is sent to
    /// the sign-in form.
    func page(_ request: Request, _ body: (_ csrf: String) async throws -> Response) async -> Response {
        do {
            guard let key = try await adminKey(request) else { return Self.redirect("/login") }
            return try await body(DashboardSession.formToken(key: key))
        } catch {
            return failure(error, request)
        }
    }

    /// A form post of a signed-in admin carrying the session's form token; anything else is
    /// refused before the action runs.
    func action(_ request: Request, _ body: ([String: String]) async throws -> Response) async -> Response {
        do {
            guard let key = try await adminKey(request) else { return Self.redirect("/login") }
            let form: [String: String] = try await Self.form(request, maxBytes: maxBodyBytes)
            guard let token = form["csrf"], DashboardSession.isValid(formToken: token, key: key) else {
                return Self.page(
                    "Refused", "message", ["title": "Refused", "text": "The form's token is missing or wrong: reload the page and try again."],
                    csrf: nil, status: .forbidden)
            }
            return try await body(form)
        } catch {
            return failure(error, request)
        }
    }

    /// The session's key, when it is a live key with the admin scope.
    func adminKey(_ request: Request) async throws -> String? {
        guard let key = DashboardSession.key(request), let caller = try await keys.caller(ofKey: key), APIScope.admin.isGranted(by: caller.scopes)
        else { return nil }
        return key
    }

    /// An error as a page: the API's status and message (a bad id, an unknown job, a state that
    /// does not allow the action), logged when it is the server's fault.
    func failure(_ error: any Error, _ request: Request) -> Response {
        let answer = APIError.from(error)
        if answer.status.code >= 500 {
            logger.error("dashboard request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
        }
        return Self.page(
            answer.status.reasonPhrase, "message", ["title": answer.status.reasonPhrase, "text": answer.message], csrf: nil, status: answer.status)
    }

    // MARK: The overview

    func overviewPage(csrf: String) async throws -> Response {
        let overview = try await queue.overview()
        let live = DashboardTemplates.library.render(OverviewView(overview, csrf: csrf), withTemplate: "live") ?? ""
        return Self.page("Overview", "overview", ["liveHTML": live, "csrf": csrf], csrf: csrf)
    }

    /// `GET /dashboard/events`: the overview's live part as HTML, sent whenever it changes.
    func overviewEvents(csrf: String) -> Response {
        feed.eventStream(.overview, since: nil) { update in
            guard let overview = update.overview else { return ("", false) }
            let html = DashboardTemplates.library.render(OverviewView(overview, csrf: csrf), withTemplate: "live") ?? ""
            let data = html.split(separator: "\n", omittingEmptySubsequences: false).map { "data: \($0)\n" }.joined()
            return ("event: overview\n\(data)\n", false)
        }
    }

    // MARK: Jobs

    /// `GET /jobs?status=&conversation=&batch=&kind=&q=&until=&before=`: 100 jobs a page, newest
    /// first, each filter read from its own index (``JobQueue/list(_:after:limit:)``); `kind` and
    /// `q` (words of the parameters) read at most 10,000 jobs a page; `until` starts the list at
    /// a time (submitted, or finished for a finished status, before it); `before` continues it.
    func jobsPage(_ request: Request, csrf: String) async throws -> Response {
        let query = request.uri.queryParameters
        func text(_ name: String) -> String? {
            query[Substring(name)].map { String($0).trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
        }
        func id(_ name: String) throws -> UUID? {
            guard let value = text(name) else { return nil }
            guard let id = UUID(uuidString: value) else {
                throw JobQueueError(.invalidInput, "\(name) must be an id (a UUID)", field: name)
            }
            return id
        }
        let filter = JobListFilter(
            groupID: try id("conversation"), batchID: try id("batch"), status: try APIServer.status(text("status")),
            kind: text("kind"), search: text("q"))
        var cursor: JobListCursor?
        if let before = text("before") {
            guard let parsed = JobListCursor(before) else {
                throw JobQueueError(.invalidInput, "before must be a cursor from an earlier page's Older link", field: "before")
            }
            cursor = parsed
        } else if let until = text("until") {
            guard let date = ISO8601.parse(until) else {
                throw JobQueueError(.invalidInput, "until must be a time such as 2026-12-02T18:00:00Z", field: "until")
            }
            cursor = JobListCursor(before: date)
        }
        let page = try await queue.list(filter, after: cursor, limit: 100)
        return Self.page("Jobs", "jobs", JobsView(page, filter: filter, until: text("until"), continued: text("before") != nil, csrf: csrf), csrf: csrf)
    }

    /// `POST /jobs/retry`: the jobs in error that the Jobs page's filters (conversation, batch)
    /// select, at most `bulkRetryLimit`. Without `confirm` it only counts them and asks; with it,
    /// it retries each as the job's own Retry does (jobs that left `error` meanwhile are skipped).
    func bulkRetry(_ form: [String: String]) async throws -> Response {
        func id(_ name: String) throws -> UUID? {
            guard let text = form[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
            guard let id = UUID(uuidString: text) else { throw JobQueueError(.invalidInput, "\(name) must be an id (a UUID)", field: name) }
            return id
        }
        let conversation = try id("conversation"), batch = try id("batch")
        let failed = try await queue.list(groupID: conversation, batchID: batch, status: .error, limit: Self.bulkRetryLimit)
        let filters = BulkRetryView.filters(conversation: conversation, batch: batch)
        guard form["confirm"] == "yes" else {
            return Self.page(
                "Retry jobs in error", "bulkRetry",
                BulkRetryView(count: failed.count, limit: Self.bulkRetryLimit, conversation: conversation, batch: batch, csrf: form["csrf"] ?? ""),
                csrf: form["csrf"] ?? "")
        }
        for job in failed {
            do {
                try await queue.retry(job.id)
            } catch let error as JobQueueError where error.code == .invalidState {
                continue  // no longer in error: retried or removed by someone else meanwhile
            }
        }
        return Self.redirect("/jobs?status=error" + filters)
    }

    /// The most jobs one bulk retry takes (each is one statement).
    static let bulkRetryLimit = 1000

    // MARK: A job

    func jobPage(_ id: UUID, csrf: String) async throws -> Response {
        let job = try await queue.job(id)
        let position = job.status == .pending ? try await queue.position(id) : nil
        let result = try await JobResults.info(id, pool: queue.pool)
        let deliveries = try await Webhooks(pool: queue.pool).deliveries(of: id, limit: 20)
        return Self.page(
            "Job \(id.lowercasedString.suffix(12))", "job", JobView(job, position: position, result: result, deliveries: deliveries, csrf: csrf),
            csrf: csrf)
    }

    // MARK: Parts

    static func page(_ title: String, _ template: String, _ context: Any, csrf: String?, status: HTTPResponse.Status = .ok) -> Response {
        let content = DashboardTemplates.library.render(context, withTemplate: template) ?? ""
        var layout: [String: Any] = ["title": title, "content": content]
        // Only when signed in: a nil wrapped in Any would still open the template's section.
        if let csrf { layout["csrf"] = csrf }
        let html = DashboardTemplates.library.render(layout, withTemplate: "layout") ?? ""
        return Response(status: status, headers: pageHeaders, body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    /// Pages load only what this server serves, are never framed, and are not cached.
    static let pageHeaders: HTTPFields = [
        .contentType: "text/html; charset=utf-8",
        .cacheControl: "no-store",
        .contentSecurityPolicy:
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        .xContentTypeOptions: "nosniff",
        .init("Referrer-Policy")!: "same-origin",
    ]

    static func asset(_ text: String, type: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: type, .cacheControl: "no-cache", .xContentTypeOptions: "nosniff"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }

    /// A form body (`application/x-www-form-urlencoded`), at most `maxBytes`.
    static func form<T: Decodable>(_ request: Request, maxBytes: Int) async throws -> T {
        let buffer = try await request.body.collect(upTo: maxBytes)
        do {
            return try URLEncodedFormDecoder().decode(T.self, from: String(buffer: buffer))
        } catch {
            throw APIError(status: .badRequest, message: "the form could not be read")
        }
    }

    /// The form's kind, or every kind when it is empty.
    static func kind(_ form: [String: String]) -> String? {
        let kind = form["kind"]?.trimmingCharacters(in: .whitespaces) ?? ""
        return kind.isEmpty || kind == allKinds ? nil : kind
    }
}

/// The pages that show a reporting view (migration 0022 keeps each one's cost bounded).
struct ReportPage: Sendable {
    let path: String
    let view: String
    let title: String
    let note: String

    static let all: [ReportPage] = [
        ReportPage(
            path: "conversations", view: "report_conversations", title: "Conversations",
            note: "The 50 conversations active last, each counted over its newest 200 jobs (capped when it has more); finished jobs of the last hour."),
        ReportPage(
            path: "batches", view: "report_batches", title: "Batches",
            note: "The newest batches that are unfinished or finished in the last hour (up to 100, and 20,000 jobs in all)."),
        ReportPage(
            path: "workers", view: "report_workers", title: "Workers",
            note: "Every registered worker process; dead after 60 s without a heartbeat."),
    ]
}

extension HTTPField.Name {
    static let xContentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
}
