import Foundation
import ImageJobs
import ImageJobsServer
import JobEngine
import Postgres
import TestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The HTTP API over real sockets: a server on a free loopback port of its own, on a fresh
/// schema, asked with URLSession.
@Suite("the HTTP API")
struct APIServerTests {
    let conversation = UUID()

    func item(_ extra: [String: JSONValue] = [:]) -> JSONValue {
        .object(["conversation_id": .string(conversation.lowercasedString), "prompt": "a red fox in snow", "width": 64, "height": 64]
            .merging(extra) { _, new in new })
    }

    @Test("no key, an unknown or a revoked key: 401; a read key cannot submit: 403; keys are stored only as hashes")
    func authentication() async throws {
        try await withServer { api, schema, _ in
            let (readKey, _) = try await api.keys.create(name: "reader", scopes: [.read])
            let (submitKey, submitInfo) = try await api.keys.create(name: "backend", scopes: [.submit])

            let anonymous = try await api.send("POST", "/v1/jobs", json: item(), key: nil)
            #expect(anonymous.status == 401)
            #expect(anonymous.headers["Www-Authenticate"] == "Bearer" || anonymous.headers["WWW-Authenticate"] == "Bearer")
            #expect(try await api.send("POST", "/v1/jobs", json: item(), key: "ijk_" + String(repeating: "0", count: 48)).status == 401)
            #expect(try await api.send("POST", "/v1/jobs", json: item(), key: "not-a-key").status == 401)

            let denied = try await api.send("POST", "/v1/jobs", json: item(), key: readKey)
            #expect(denied.status == 403)
            #expect(denied.json["error"]?.stringValue?.contains("submit scope") == true)
            #expect(try await schema.pool.int("SELECT count(*)::int FROM jobs") == 0)

            #expect(try await api.send("POST", "/v1/jobs", json: item(), key: submitKey).status == 201)
            #expect(try await api.keys.revoke(prefix: submitInfo.prefix))
            #expect(try await api.send("POST", "/v1/jobs", json: item(), key: submitKey).status == 401)

            // Neither key appears in the table, whole or as its secret part.
            for key in [readKey, submitKey] {
                let found = try await schema.pool.int("""
                    SELECT count(*)::int FROM api_keys k
                    WHERE position(\(String(key.dropFirst(4))) IN k::text) > 0 OR position(\(key) IN k::text) > 0
                    """)
                #expect(found == 0)
            }
        }
    }

    @Test("a known path asked with a method it does not take is a 405 naming the ones it does, before any key is asked for")
    func methodNotAllowed() async throws {
        try await withServer { api, schema, _ in
            let id = UUID().lowercasedString
            for (method, path, allow) in [("DELETE", "/v1/jobs/\(id)", "GET"), ("PUT", "/v1/jobs", "POST"), ("GET", "/v1/jobs", "POST"),
                                          ("GET", "/v1/jobs/\(id)/cancel", "POST"), ("PATCH", "/v1/batches", "POST")] {
                let answer = try await api.send(method, path, key: nil)
                #expect(answer.status == 405, "\(method) \(path)")
                #expect(answer.headers["Allow"] == allow, "\(method) \(path)")
                #expect(answer.json["error"]?.stringValue == "this path answers \(allow) only")
            }
            #expect(try await api.send("DELETE", "/v1/nothing-here", key: nil).status == 404)
            #expect(try await schema.pool.int("SELECT count(*)::int FROM jobs") == 0)
        }
    }

    @Test("POST /v1/jobs makes the job (201, Location, position); the same Idempotency-Key returns it (200); GET shows it")
    func submitAndRead() async throws {
        try await withServer { api, _, queue in
            let (key, _) = try await api.keys.create(name: "backend", scopes: [.submit])
            let created = try await api.send("POST", "/v1/jobs", json: item(["priority": "high"]), key: key, headers: ["Idempotency-Key": "msg-1"])
            #expect(created.status == 201)
            let id = try #require(created.json["id"]?.stringValue.flatMap(UUID.init(uuidString:)))
            #expect(created.headers["Location"] == "/v1/jobs/\(id.lowercasedString)")
            #expect(created.json["conversation_id"]?.stringValue == conversation.lowercasedString)
            #expect(created.json["status"]?.stringValue == "pending")
            #expect(created.json["position"]?["position"]?.intValue == 0)

            let again = try await api.send("POST", "/v1/jobs", json: item(["priority": "high"]), key: key, headers: ["Idempotency-Key": "msg-1"])
            #expect(again.status == 200)
            #expect(again.json["id"]?.stringValue == id.lowercasedString)
            #expect(try await queue.list(groupID: conversation).count == 1)

            let conflicting = try await api.send(
                "POST", "/v1/jobs", json: item(["idempotency_key": "other"]), key: key, headers: ["Idempotency-Key": "msg-1"])
            #expect(conflicting.status == 422)
            #expect(conflicting.json["field"]?.stringValue == "idempotency_key")

            let second = try await api.send("POST", "/v1/jobs", json: item(), key: key)
            #expect(second.json["position"]?["position"]?.intValue == 1, "behind the high-priority job")

            let read = try await api.send("GET", "/v1/jobs/\(id.lowercasedString)", key: key)
            #expect(read.status == 200)
            #expect(read.json["priority"]?.stringValue == "high")
            #expect(read.json["params"]?["prompt"]?.stringValue == "a red fox in snow")
            #expect(read.json["result"] == .null)
            #expect(try await api.send("GET", "/v1/jobs/\(UUID().lowercasedString)", key: key).status == 404)
        }
    }

    @Test("bad input is refused naming the field (and the item of a batch), with 400, 413 or 422, and nothing is written")
    func badInput() async throws {
        try await withServer(maxBodyBytes: 4_096) { api, schema, _ in
            let (key, _) = try await api.keys.create(name: "backend", scopes: [.submit])
            let cases: [(JSONValue, String)] = [
                (item(["conversation_id": "not-a-uuid"]), "conversation_id"),
                (item(["width": 7]), "width"),
                (item(["priority": "urgent"]), "priority"),
                (item(["colour": "red"]), "colour"),
                (item(["run_at": "tomorrow"]), "run_at"),
                (item(["timeout": 1e300]), "timeout"),
                (item(["timeout": 100_000]), "timeout"),
                (.object(["prompt": "x"]), "conversation_id"),
            ]
            for (body, field) in cases {
                let answer = try await api.send("POST", "/v1/jobs", json: body, key: key)
                #expect(answer.status == 422, "\(field)")
                #expect(answer.json["field"]?.stringValue == field)
            }
            let batch = try await api.send("POST", "/v1/batches", json: .array([item(), item(["steps": 0])]), key: key)
            #expect(batch.status == 422)
            #expect(batch.json["field"]?.stringValue == "steps")
            #expect(batch.json["index"]?.intValue == 1)
            #expect(try await api.send("POST", "/v1/batches", json: item(), key: key).status == 422, "a batch is an array")

            let malformed = try await api.send("POST", "/v1/jobs", body: Data("{\"prompt\": ".utf8), key: key)
            #expect(malformed.status == 400)
            #expect(malformed.json["error"]?.stringValue?.contains("not valid JSON") == true)

            let large = try await api.send("POST", "/v1/jobs", json: item(["prompt": .string(String(repeating: "fox ", count: 2_000))]), key: key)
            #expect(large.status == 413)
            #expect(try await api.send("GET", "/v1/jobs/nope", key: key).json["field"]?.stringValue == "id")

            #expect(try await schema.pool.int("SELECT count(*)::int FROM jobs") == 0)
            #expect(try await schema.pool.int("SELECT count(*)::int FROM batches") == 0)
        }
    }

    @Test("batches, a batch's progress, cancel (409 once finished), retry (of a job in error only) and a conversation's jobs")
    func batchesCancelRetry() async throws {
        try await withServer { api, schema, _ in
            let (key, _) = try await api.keys.create(name: "backend", scopes: [.submit])
            let created = try await api.send("POST", "/v1/batches", json: .array([item(), item(), item()]), key: key, headers: ["Idempotency-Key": "b1"])
            #expect(created.status == 201)
            let batchID = try #require(created.json["batch_id"]?.stringValue)
            let ids = (created.json["job_ids"]?.arrayValue ?? []).compactMap { $0.stringValue }
            try #require(ids.count == 3)
            let replay = try await api.send("POST", "/v1/batches", json: .array([item(), item(), item()]), key: key, headers: ["Idempotency-Key": "b1"])
            #expect(replay.status == 200)
            #expect(replay.json["batch_id"]?.stringValue == batchID)

            let progress = try await api.send("GET", "/v1/batches/\(batchID)", key: key)
            #expect(progress.json["total"]?.intValue == 3)
            #expect(progress.json["counts"]?["pending"]?.intValue == 3)

            let cancelled = try await api.send("POST", "/v1/jobs/\(ids[0])/cancel", key: key)
            #expect(cancelled.status == 200)
            #expect(cancelled.json["was"]?.stringValue == "pending")
            #expect(try await api.send("POST", "/v1/jobs/\(ids[0])/cancel", key: key).status == 409)
            #expect(try await api.send("POST", "/v1/jobs/\(ids[1])/retry", key: key).status == 409, "a pending job is not retried")

            try await JobFactory(schema.pool).finish([try #require(UUID(uuidString: ids[1]))], as: .error)
            let retried = try await api.send("POST", "/v1/jobs/\(ids[1])/retry", key: key)
            #expect(retried.status == 200)
            #expect(retried.json["status"]?.stringValue == "pending")

            let listed = try await api.send("GET", "/v1/conversations/\(conversation.lowercasedString)/jobs?status=pending", key: key)
            #expect(listed.json["jobs"]?.arrayValue?.count == 2)
            let bogus = try await api.send("GET", "/v1/conversations/\(conversation.lowercasedString)/jobs?status=done", key: key)
            #expect(bogus.status == 422)
            #expect(bogus.json["field"]?.stringValue == "status")
        }
    }

    @Test("the image route serves the stored bytes with their SHA-256 as ETag, 304 for If-None-Match, 404 before")
    func image() async throws {
        try await withServer { api, schema, queue in
            let (key, _) = try await api.keys.create(name: "viewer", scopes: [.read])
            let (job, _) = try await queue.submit(try ImageJob.spec(item: item()))
            let path = "/v1/jobs/\(job.id.lowercasedString)/image"
            #expect(try await api.send("GET", path, key: key).status == 404)

            let png = try PNG.encodeRGB(width: 2, height: 1, pixels: [255, 0, 0, 0, 0, 255])
            try await schema.pool.withConnection { connection in
                try await JobResults.store(
                    JobResultRecord(jobID: job.id, contentType: "image/png", bytes: png, backend: "test", generationMilliseconds: 1),
                    on: connection)
            }
            let served = try await api.send("GET", path, key: key)
            #expect(served.status == 200)
            #expect(served.headers["Content-Type"] == "image/png")
            #expect([UInt8](served.body) == png)
            let etag = try #require(served.headers["Etag"] ?? served.headers["ETag"])
            #expect(etag == "\"\(SHA256.hexDigest(png))\"")
            #expect(try await api.send("GET", path, key: key, headers: ["If-None-Match": etag]).status == 304)
            #expect(try await api.send("GET", "/v1/jobs/\(UUID().lowercasedString)/image", key: key).status == 404)
        }
    }
}

/// A running server on a fresh schema, and a client for it: it keeps no cookies and follows no
/// redirects, so each test sees exactly what the server answered.
struct APIClient: Sendable {
    static let session: URLSession = {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpCookieStorage = nil
        configuration.httpShouldSetCookies = false
        return URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
    }()

    final class NoRedirects: NSObject, URLSessionTaskDelegate, Sendable {
        func urlSession(
            _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse, newRequest request: URLRequest,
            completionHandler: @escaping @Sendable (URLRequest?) -> Void
        ) {
            completionHandler(nil)
        }
    }

    let port: Int
    let keys: APIKeys
    var base: String { "http://127.0.0.1:\(port)" }

    struct Answer {
        var status: Int
        var headers: [String: String]
        var body: Data
        var json: JSONValue { (try? JSONDecoder().decode(JSONValue.self, from: body)) ?? .null }
    }

    func send(_ method: String, _ path: String, json: JSONValue, key: String?, headers: [String: String] = [:]) async throws -> Answer {
        try await send(method, path, body: try JSONEncoder().encode(json), key: key, headers: headers)
    }

    /// A form post, as a browser sends it.
    func post(_ path: String, form: [String: String], cookie: String? = nil, headers: [String: String] = [:]) async throws -> Answer {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let body = form.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed)!)" }.joined(separator: "&")
        var all = headers.merging(["Content-Type": "application/x-www-form-urlencoded"]) { $1 }
        if let cookie { all["Cookie"] = cookie }
        return try await send("POST", path, body: Data(body.utf8), key: nil, headers: all)
    }

    func send(_ method: String, _ path: String, body: Data? = nil, key: String?, headers: [String: String] = [:]) async throws -> Answer {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = method
        request.httpBody = body
        if body != nil { request.setValue("application/json", forHTTPHeaderField: "Content-Type") }
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await Self.session.data(for: request)
        let http = response as! HTTPURLResponse
        var fields: [String: String] = [:]
        for (name, value) in http.allHeaderFields { fields["\(name)"] = "\(value)" }
        return Answer(status: http.statusCode, headers: fields, body: data)
    }
}

func withServer(
    maxBodyBytes: Int = 1 << 20, _ body: (APIClient, TestSchema, JobQueue) async throws -> Void
) async throws {
    try await TestDatabase.withMigratedSchema { schema, queue in
        let server = APIServer(queue: queue, logger: TestLog.quiet, maxBodyBytes: maxBodyBytes)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let task = Task {
            defer { continuation.finish() }
            try await server.run(host: "127.0.0.1", port: 0) { continuation.yield($0) }
        }
        defer { task.cancel() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else {
            try await task.value
            throw ServerStoppedBeforeRunning()
        }
        try await body(APIClient(port: port, keys: APIKeys(pool: queue.pool)), schema, queue)
        task.cancel()
        _ = await task.result
    }
}

struct ServerStoppedBeforeRunning: Error, CustomStringConvertible {
    var description: String { "the API server stopped before it accepted connections" }
}

extension JSONValue {
    var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }
}

@Suite("the HTTP API's event streams")
struct EventStreamTests {
    @Test("a job's stream sends its state with its position, then each change, and ends after its final state")
    func jobStream() async throws {
        try await withServer { api, _, queue in
            let (key, _) = try await api.keys.create(name: "viewer", scopes: [.submit])
            let conversation = UUID()
            let (ahead, _) = try await queue.submit(try ImageJob.spec(conversationID: conversation, parameters: .init(prompt: "first", width: 64, height: 64)))
            let (job, _) = try await queue.submit(try ImageJob.spec(conversationID: conversation, parameters: .init(prompt: "second", width: 64, height: 64)))

            let unauthorized = try EventStreamClient(port: api.port, path: "/v1/jobs/\(job.id.lowercasedString)/events", headers: [:])
            var none = unauthorized.events.makeAsyncIterator()
            #expect(await unauthorized.next(timeout: .seconds(5), iterator: &none) == nil)
            #expect(unauthorized.statusLine.contains("401"))

            let stream = try EventStreamClient(
                port: api.port, path: "/v1/jobs/\(job.id.lowercasedString)/events", headers: ["Authorization": "Bearer \(key)"])
            var events = stream.events.makeAsyncIterator()
            let first = try #require(await stream.next(iterator: &events))
            #expect(stream.statusLine.contains("200"))
            #expect(first.event == "job")
            let state = try JSONValue.parse(first.data)
            #expect(state["id"]?.stringValue == job.id.lowercasedString)
            #expect(state["status"]?.stringValue == "pending")
            #expect(state["position"]?["position"]?.intValue == 1)

            // The job ahead leaves the queue: the position moves up.
            _ = try await queue.cancel(ahead.id)
            let moved = try #require(await stream.next(iterator: &events))
            #expect(try JSONValue.parse(moved.data)["position"]?["position"]?.intValue == 0)

            _ = try await api.send("POST", "/v1/jobs/\(job.id.lowercasedString)/cancel", key: key)
            // The final state arrives (after any change the feed saw before the cancel), then the stream ends.
            var seen: [String] = []
            while seen.last != "cancelled", seen.count < 5, let event = await stream.next(iterator: &events) {
                let state = try JSONValue.parse(event.data)
                #expect(state["id"]?.stringValue == job.id.lowercasedString)
                seen.append(state["status"]?.stringValue ?? "?")
            }
            #expect(seen.last == "cancelled", "\(seen)")
            #expect(seen.dropLast().allSatisfy { $0 == "pending" }, "\(seen)")
            #expect(await stream.next(timeout: .seconds(5), iterator: &events) == nil, "the stream ends after the final state")
        }
    }

    @Test("a conversation's stream resumes with Last-Event-ID: jobs that finished while it was away are sent, older ones are not")
    func conversationResumes() async throws {
        try await withServer { api, schema, queue in
            let (key, _) = try await api.keys.create(name: "viewer", scopes: [.read])
            let conversation = UUID()
            let path = "/v1/conversations/\(conversation.lowercasedString)/events"
            let auth = ["Authorization": "Bearer \(key)"]
            let spec = { (prompt: String) in try ImageJob.spec(conversationID: conversation, parameters: .init(prompt: prompt, width: 64, height: 64)) }

            let early = try await queue.submit(try spec("finished before anyone watched")).job
            try await JobFactory(schema.pool).finish([early.id], ago: .seconds(60))

            let stream = try EventStreamClient(port: api.port, path: path, headers: auth)
            var events = stream.events.makeAsyncIterator()
            let a = try await queue.submit(try spec("a")).job
            let b = try await queue.submit(try spec("b")).job
            var seen: [String: String] = [:]
            var lastID: String?
            while seen.count < 2, let event = await stream.next(iterator: &events) {
                let state = try JSONValue.parse(event.data)
                seen[state["id"]?.stringValue ?? ""] = state["status"]?.stringValue
                lastID = event.id
            }
            #expect(seen == [a.id.lowercasedString: "pending", b.id.lowercasedString: "pending"])
            stream.disconnect()

            try await JobFactory(schema.pool).finish([a.id])
            let resumed = try EventStreamClient(port: api.port, path: path, headers: auth.merging(["Last-Event-ID": try #require(lastID)]) { $1 })
            var resumedEvents = resumed.events.makeAsyncIterator()
            var states: [String: String] = [:]
            while states.count < 2, let event = await resumed.next(timeout: .seconds(5), iterator: &resumedEvents) {
                let state = try JSONValue.parse(event.data)
                states[state["id"]?.stringValue ?? ""] = state["status"]?.stringValue
            }
            #expect(states == [a.id.lowercasedString: "completed", b.id.lowercasedString: "pending"])
            #expect(states[early.id.lowercasedString] == nil)
            resumed.disconnect()
        }
    }
}

@Suite("the HTTP API's OpenAPI document")
struct OpenAPIDocumentTests {
    @Test("the document's item schema accepts exactly the items the API accepts (checked by jsonschema from PyPI)")
    func itemSchemaAgrees() async throws {
        guard let python = ProcessInfo.processInfo.environment["IMAGEJOBS_PYTHON"] else {
            Issue.record("IMAGEJOBS_PYTHON (the tests' Python, set by make test) is not set")
            return
        }
        try await withServer { api, _, _ in
            let (key, _) = try await api.keys.create(name: "backend", scopes: [.submit])
            let conversation = JSONValue.string(UUID().lowercasedString)
            func item(_ fields: [String: JSONValue]) -> JSONValue {
                .object(["conversation_id": conversation, "prompt": "a fox"].merging(fields) { $1 })
            }
            let items: [JSONValue] = [
                item([:]), item(["width": 64, "height": 2048, "steps": 150, "seed": 0, "model": "sd-1.5/base:v2"]),
                item(["priority": .null, "run_at": .null, "negative_prompt": .null, "timeout": 1, "max_retries": 25]),
                item(["prompt": "line one\nline two\ttabbed"]), item(["run_at": "2026-01-01T00:00:00Z"]),
                item(["width": 63]), item(["width": 100]), item(["height": 4096]), item(["steps": 0]), item(["seed": -1]),
                item(["model": ""]), item(["model": "-x"]), item(["model": "a b"]), item(["priority": "urgent"]),
                item(["timeout": 0.5]), item(["timeout": 86_401]), item(["timeout": 1e300]), item(["max_retries": 26]),
                item(["prompt": ""]), item(["prompt": "   "]), item(["prompt": "bell\u{07}"]), item(["negative_prompt": "nul\u{00}"]),
                item(["prompt": .string(String(repeating: "x", count: 4_001))]), item(["idempotency_key": ""]),
                item(["idempotency_key": .string(String(repeating: "k", count: 201))]), item(["kind": "video.generate"]),
                item(["colour": "red"]), item(["width": "64"]), item(["run_at": "tomorrow"]),
                .object(["prompt": "no conversation"]), .object(["conversation_id": "not-a-uuid", "prompt": "x"]),
            ]
            var accepted: [Bool] = []
            for item in items {
                let status = try await api.send("POST", "/v1/jobs", json: item, key: key).status
                #expect([201, 422].contains(status), "\(item): \(status)")
                accepted.append(status == 201)
            }
            let document = try JSONValue.parse(String(decoding: try await api.send("GET", "/openapi.json", key: nil).body, as: UTF8.self))
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Clients/validate_items.py")
            let input = String(decoding: try JSONEncoder().encode(JSONValue.object(["document": document, "items": .array(items)])), as: UTF8.self)
            let result = try await runProcess(python, [script.path], stdin: input)
            #expect(result.status == 0, "\(result.stderr)")
            let valid = try JSONDecoder().decode([Bool].self, from: Data(result.stdout.utf8))
            #expect(valid.count == items.count)
            for (n, (v, a)) in zip(valid, accepted).enumerated() {
                #expect(v == a, "\(items[n]): the schema says \(v ? "valid" : "invalid"), the API \(a ? "accepted" : "refused") it")
            }
            #expect(accepted.filter { $0 }.count == 5, "the first five items are the valid ones")
        }
    }

    @Test("/openapi.json lists every route; each operation, asked with and without a key, answers a status the document gives it")
    func documentIsTrue() async throws {
        try await withServer { api, _, queue in
            let (key, _) = try await api.keys.create(name: "admin", scopes: [.admin])
            let conversation = UUID()
            let item: JSONValue = .object(["conversation_id": .string(conversation.lowercasedString), "prompt": "a fox", "width": 64, "height": 64])
            let (job, _) = try await queue.submit(try ImageJob.spec(item: item))
            let batch = try await queue.submitBatch([try ImageJob.spec(item: item)], groupID: conversation)

            let served = try await api.send("GET", "/openapi.json", key: nil)
            #expect(served.status == 200)
            guard case .object(let paths)? = served.json["paths"] else {
                Issue.record("no paths in /openapi.json")
                return
            }
            #expect(served.json["openapi"]?.stringValue?.hasPrefix("3.") == true)
            let documented = Set(paths.flatMap { path, ops in (ops.objectValue ?? [:]).keys.map { "\($0.uppercased()) \(path)" } })
            #expect(documented == [
                "POST /v1/jobs", "POST /v1/batches", "GET /v1/jobs/{id}", "GET /v1/jobs/{id}/image", "POST /v1/jobs/{id}/cancel",
                "POST /v1/jobs/{id}/retry", "GET /v1/jobs/{id}/events", "GET /v1/batches/{id}", "GET /v1/conversations/{id}/jobs",
                "GET /v1/conversations/{id}/events", "GET /v1/webhook-secret",
            ])
            for (path, operations) in paths {
                for (method, operation) in operations.objectValue ?? [:] {
                    let statuses = Set((operation["responses"]?.objectValue ?? [:]).keys.compactMap { Int($0) })
                    let id = path.hasPrefix("/v1/batches/") ? batch.batchID : path.hasPrefix("/v1/conversations/") ? conversation : job.id
                    let concrete = path.replacingOccurrences(of: "{id}", with: id.lowercasedString)
                    let body: JSONValue? = method == "post" ? (path == "/v1/batches" ? .array([item]) : path == "/v1/jobs" ? item : nil) : nil
                    for withKey in [true, false] {
                        let status: Int
                        if path.hasSuffix("/events") {
                            let stream = try EventStreamClient(port: api.port, path: concrete, headers: withKey ? ["Authorization": "Bearer \(key)"] : [:])
                            var events = stream.events.makeAsyncIterator()
                            _ = await stream.next(timeout: .seconds(3), iterator: &events)
                            stream.disconnect()
                            status = Int(stream.statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
                        } else {
                            let answer = try await api.send(
                                method.uppercased(), concrete, body: try body.map { try JSONEncoder().encode($0) }, key: withKey ? key : nil)
                            status = answer.status
                            // A route the server lacks would also be a 404, but not with the API's error shape.
                            if status >= 400 { #expect(answer.json["error"]?.stringValue != nil, "\(method) \(path): \(status) without an error body") }
                        }
                        #expect(statuses.contains(status), "\(method.uppercased()) \(path) answered \(status), documented \(statuses.sorted())")
                        #expect(withKey || status == 401)
                    }
                }
            }
        }
    }
}

extension JSONValue {
    var objectValue: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }
}
