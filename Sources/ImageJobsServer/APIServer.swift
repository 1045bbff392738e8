import Foundation
import HTTPTypes
import Hummingbird
import ImageJobs
import JobEngine
import Logging

/// `imagejobs serve`: the versioned JSON API over the image queue. Every route authenticates
/// its API key first, reads at most `maxBodyBytes` of body, and answers failures as
/// ``APIError`` JSON; submits go through the same validation as the CLI and `submit_job`.
public struct APIServer: Sendable {
    let queue: JobQueue
    let keys: APIKeys
    let webhooks: Webhooks
    let logger: Logger
    let maxBodyBytes: Int

    /// - Parameter maxBodyBytes: larger bodies are refused (413) before they are parsed; the
    ///   default takes a 10,000-job batch with long prompts.
    public init(queue: JobQueue, logger: Logger, maxBodyBytes: Int = 8 << 20) {
        self.queue = queue
        self.keys = APIKeys(pool: queue.pool)
        self.webhooks = Webhooks(pool: queue.pool)
        self.logger = logger
        self.maxBodyBytes = maxBodyBytes
    }

    /// Serves until SIGTERM or SIGINT (or until the calling task is cancelled), finishing the
    /// requests in flight. `onRunning` gets the bound port (port 0 picks a free one) once the
    /// server accepts connections.
    public func run(host: String, port: Int, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        try await application(host: host, port: port, onRunning: onRunning).runService()
    }

    func application(
        host: String, port: Int, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let feed = JobFeed(queue: queue, logger: logger)
        let router = Router()
        router.get("openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        router.post("v1/jobs") { request, _ in await self.answer(request, .submit) { try await self.submitJob(request, by: $0) } }
        router.post("v1/batches") { request, _ in await self.answer(request, .submit) { try await self.submitBatch(request, by: $0) } }
        router.get("v1/webhook-secret") { request, _ in
            await self.answer(request, .submit) { caller in
                try Self.json(JSONValue.object(["secret": .string(try await self.webhooks.secret(keyID: caller.keyID) ?? "")]))
            }
        }
        router.get("v1/jobs/:id") { request, context in
            await self.answer(request, .read) { try await self.job(try Self.id(context, "id")) }
        }
        router.get("v1/jobs/:id/image") { request, context in
            await self.answer(request, .read) { try await self.image(try Self.id(context, "id"), request) }
        }
        router.post("v1/jobs/:id/cancel") { request, context in
            await self.answer(request, .submit) { try await self.cancel(try Self.id(context, "id")) }
        }
        router.post("v1/jobs/:id/retry") { request, context in
            await self.answer(request, .submit) { try await self.retry(try Self.id(context, "id")) }
        }
        router.get("v1/batches/:id") { request, context in
            await self.answer(request, .read) { try Self.json(try await self.queue.batch(try Self.id(context, "id"))) }
        }
        router.get("v1/conversations/:id/jobs") { request, context in
            await self.answer(request, .read) { try await self.conversationJobs(try Self.id(context, "id"), request) }
        }
        router.get("v1/jobs/:id/events") { request, context in
            await self.answer(request, .read) {
                let id = try Self.id(context, "id")
                _ = try await self.queue.job(id)
                return try Self.events(feed, .job(id), request)
            }
        }
        router.get("v1/conversations/:id/events") { request, context in
            await self.answer(request, .read) { try Self.events(feed, .conversation(try Self.id(context, "id")), request) }
        }
        // The API's paths asked with a method they do not take: 405 naming the ones they do.
        let methods: [(String, [HTTPRequest.Method])] = [
            ("v1/jobs", [.post]), ("v1/batches", [.post]), ("v1/webhook-secret", [.get]), ("v1/jobs/:id", [.get]),
            ("v1/jobs/:id/image", [.get]), ("v1/jobs/:id/cancel", [.post]), ("v1/jobs/:id/retry", [.post]),
            ("v1/batches/:id", [.get]), ("v1/conversations/:id/jobs", [.get]), ("v1/jobs/:id/events", [.get]),
            ("v1/conversations/:id/events", [.get]),
        ]
        for (path, allowed) in methods {
            for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] where !allowed.contains(method) {
                router.on(RouterPath(stringLiteral: path), method: method) { _, _ in APIError.methodNotAllowed(allowed).response }
            }
        }
        Dashboard(queue: queue, keys: keys, feed: feed, maxBodyBytes: maxBodyBytes, logger: logger).register(on: router)
        var app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "imagejobs"),
            onServerRunning: { channel in
                // No address: the channel closed as it opened (the server is already stopping).
                if let bound = channel.localAddress?.port { await onRunning(bound) }
            },
            logger: logger)
        app.addServices(feed)
        return app
    }

    /// `GET /v1/jobs/{id}/events`, `GET /v1/conversations/{id}/events`: Server-Sent Events, one
    /// `job` event per change (the job as `GET /v1/jobs/{id}` shows it, less `result` and
    /// `links`), ids being the database time of the read. With `Last-Event-ID` a conversation's
    /// stream also sends the jobs that finished since that time; a job's stream sends the job's
    /// state first and ends after its final state.
    static func events(_ feed: JobFeed, _ watch: Watch, _ request: Request) throws -> Response {
        let endsWhenFinal: Bool
        if case .job = watch { endsWhenFinal = true } else { endsWhenFinal = false }
        return feed.eventStream(watch, since: request.headers[.lastEventID].flatMap(ISO8601.parse)) { update in
            var text = ""
            for state in update.jobs {
                let document = JSONValue.object(try jobFields(state.job, position: state.position))
                let data = String(decoding: try ProductJSON.encode(document), as: UTF8.self)
                text += "id: \(ISO8601.format(update.at))\nevent: job\ndata: \(data)\n\n"
                if endsWhenFinal && state.job.status.isFinal { return (text, true) }
            }
            return (text, false)
        }
    }

    // MARK: Routes

    /// `POST /v1/jobs`: one batch-file item, plus `callback_url` for its webhooks;
    /// `Idempotency-Key` names it (as `idempotency_key` does). 201 with the new job, 200 with
    /// the earlier one for a key already used.
    func submitJob(_ request: Request, by caller: APICaller) async throws -> Response {
        guard case .object(var fields) = try await body(request) else { throw JobQueueError(.invalidInput, "a job must be a JSON object") }
        if let key = request.headers[.idempotencyKey] {
            if let given = fields["idempotency_key"], given != .null, given != .string(key) {
                throw JobQueueError(.invalidInput, "idempotency_key differs from the Idempotency-Key header; give one", field: "idempotency_key")
            }
            fields["idempotency_key"] = .string(key)
        }
        let callback = try await webhooks.takeCallback(from: &fields, index: nil)
        let (job, created) = try await webhooks.submit(try ImageJob.spec(item: .object(fields), doorFields: ["callback_url"]), callback: callback, keyID: caller.keyID, queue: queue)
        return try Self.json(try await document(job), status: created ? .created : .ok, location: "/v1/jobs/\(job.id.lowercasedString)")
    }

    /// `POST /v1/batches`: the items of one conversation, all or nothing, as a JSON array or
    /// as `{"jobs": [...], "callback_url": ...}` (the batch's completion webhook); each item
    /// may name its own `callback_url`. `Idempotency-Key` names the batch.
    func submitBatch(_ request: Request, by caller: APICaller) async throws -> Response {
        var batchCallback: URL?
        var items: [JSONValue]
        switch try await body(request) {
        case .array(let array):
            items = array
        case .object(var fields):
            guard case .array(let array)? = fields.removeValue(forKey: "jobs") else {
                throw JobQueueError(.invalidInput, "a batch is a JSON array of jobs, or an object with \"jobs\" (that array) and \"callback_url\"", field: "jobs")
            }
            batchCallback = try await webhooks.takeCallback(from: &fields, index: nil)
            if let unknown = fields.keys.sorted().first {
                throw JobQueueError(.invalidInput, "unknown field \"\(unknown.prefix(40))\"; a batch object has jobs and callback_url", field: unknown)
            }
            items = array
        default:
            throw JobQueueError(.invalidInput, "a batch is a JSON array of jobs", field: "jobs")
        }
        var callbacks: [URL?] = []
        var allowed = Set<String>()
        for i in items.indices {
            guard case .object(var fields) = items[i] else { callbacks.append(nil); continue }
            callbacks.append(try await webhooks.takeCallback(from: &fields, index: i, allowed: &allowed))
            items[i] = .object(fields)
        }
        let (specs, conversation) = try ImageJob.batch(items: items, doorFields: ["callback_url"])
        let submitted = try await webhooks.submitBatch(
            specs, groupID: conversation, idempotencyKey: request.headers[.idempotencyKey],
            callback: batchCallback, jobCallbacks: callbacks, keyID: caller.keyID, queue: queue)
        return try Self.json(
            submitted, status: submitted.created ? .created : .ok, location: "/v1/batches/\(submitted.batchID.lowercasedString)")
    }

    /// `GET /v1/jobs/{id}`: the job, its attempts' errors, its position and ETA (and why it
    /// waits) while pending, and its result's metadata once stored.
    func job(_ id: UUID) async throws -> Response {
        try Self.json(try await document(try await queue.job(id)))
    }

    /// `GET /v1/jobs/{id}/image`: the stored result's bytes, with its SHA-256 as the ETag.
    func image(_ id: UUID, _ request: Request) async throws -> Response {
        guard let info = try await JobResults.info(id, pool: queue.pool) else {
            _ = try await queue.job(id)  // 404 for an unknown job, before saying it has no image
            throw APIError(status: .notFound, message: "job \(id.lowercasedString) has no stored image (yet)")
        }
        let etag = "\"\(info.sha256)\""
        if request.headers[.ifNoneMatch]?.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == etag }) == true {
            return Response(status: .notModified, headers: [.eTag: etag])
        }
        guard let bytes = try await JobResults.bytes(id, pool: queue.pool) else {
            throw APIError(status: .notFound, message: "job \(id.lowercasedString) has no stored image (yet)")
        }
        return Response(
            status: .ok, headers: [.contentType: info.contentType, .eTag: etag, .cacheControl: "private, max-age=31536000, immutable"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// `POST /v1/jobs/{id}/cancel`: 200 with the status it had; 409 once it has finished.
    func cancel(_ id: UUID) async throws -> Response {
        let was = try await queue.cancel(id)
        return try Self.json(JSONValue.object(["id": .string(id.lowercasedString), "status": "cancelled", "was": .string(was.rawValue)]))
    }

    /// `POST /v1/jobs/{id}/retry`: a job in error goes back to the queue with a fresh retry
    /// budget; 409 for any other state.
    func retry(_ id: UUID) async throws -> Response {
        try await queue.retry(id)
        return try Self.json(try await document(try await queue.job(id)))
    }

    /// `GET /v1/conversations/{id}/jobs?status=&limit=`: newest first.
    func conversationJobs(_ id: UUID, _ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let status = try Self.status(query["status"].map(String.init))
        var limit = 50
        if let text = query["limit"] {
            guard let n = Int(text) else { throw JobQueueError(.invalidInput, "limit must be an integer between 1 and 10000", field: "limit") }
            limit = n
        }
        return try Self.json(JSONValue.object(["jobs": try ProductJSON.value(try await queue.list(groupID: id, status: status, limit: limit))]))
    }

    // MARK: Parts

    /// A job as the API shows it: its fields, plus `position` while pending, `result` once
    /// stored, and `links`.
    func document(_ job: Job) async throws -> JSONValue {
        var doc = try Self.jobFields(job, position: job.status == .pending ? try await queue.position(job.id) : nil)
        // Only a completed job has a result (a job's result is stored with its completion).
        doc["result"] = job.status == .completed ? try ProductJSON.value(try await JobResults.info(job.id, pool: queue.pool)) : .null
        let path = "/v1/jobs/\(job.id.lowercasedString)"
        doc["links"] = .object(["self": .string(path), "image": .string(path + "/image"), "cancel": .string(path + "/cancel")])
        return .object(doc)
    }

    /// The request's JSON body: at most `maxBodyBytes` (413 beyond, before any parsing), then
    /// valid JSON (400 otherwise).
    func body(_ request: Request) async throws -> JSONValue {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBodyBytes {
            throw APIError(status: .contentTooLarge, message: "the request body is \(length) bytes; at most \(maxBodyBytes) are accepted")
        }
        let buffer = try await request.body.collect(upTo: maxBodyBytes)
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer.readableBytesView)) else {
            throw APIError(status: .badRequest, message: "the request body is not valid JSON")
        }
        return value
    }

    /// Authenticates, checks the scope, runs the route and turns any failure into JSON. A GET
    /// may also authenticate with the dashboard's session cookie (its pages load images and
    /// event streams from here); a POST never does, so no other site's page can act with it.
    func answer(_ request: Request, _ scope: APIScope, _ route: (APICaller) async throws -> Response) async -> Response {
        do {
            let bearer = request.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
            let session = request.method == .get ? DashboardSession.key(request) : nil
            guard let key = bearer ?? session, let caller = try await keys.caller(ofKey: key.trimmingCharacters(in: .whitespaces))
            else { throw APIError.unauthorized() }
            guard scope.isGranted(by: caller.scopes) else { throw APIError.forbidden(scope) }
            return try await route(caller)
        } catch {
            let answer = APIError.from(error)
            if answer.status.code >= 500 {
                logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            }
            return answer.response
        }
    }

    /// The same, for a route that does not need to know who asked.
    func answer(_ request: Request, _ scope: APIScope, _ route: () async throws -> Response) async -> Response {
        await answer(request, scope) { (_: APICaller) in try await route() }
    }

    /// A job's fields as the API and its events show them, with its `position` when known
    /// (less the position's `id` and `status`, which are the job's own).
    static func jobFields(_ job: Job, position: QueuePosition?) throws -> [String: JSONValue] {
        guard case .object(var fields) = try ProductJSON.value(job) else { return [:] }
        if let position, case .object(var p) = try ProductJSON.value(position) {
            p["id"] = nil
            p["status"] = nil
            fields["position"] = .object(p)
        }
        return fields
    }

    /// A status filter: `nil` for none, else one of the statuses (422 naming the field).
    static func status(_ text: String?) throws -> JobStatus? {
        guard let text else { return nil }
        guard let status = JobStatus(rawValue: text) else {
            throw JobQueueError(.invalidInput, "status must be one of \(JobStatus.allCases.map(\.rawValue).joined(separator: ", "))", field: "status")
        }
        return status
    }

    static func id(_ context: some RequestContext, _ name: String) throws -> UUID {
        guard let text = context.parameters.get(name), let id = UUID(uuidString: text) else { throw APIError.badID(name) }
        return id
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok, location: String? = nil) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let location { headers[.location] = location }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: try ProductJSON.encode(value))))
    }
}

extension HTTPField.Name {
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
}
