import Foundation
import ImageJobs
import ImageJobsServer
import JobEngine
import Postgres
import TestSupport
import Testing

/// Webhooks end to end: a submit through the HTTP API names a callback, a worker runs the job
/// and then the delivery the database queued, and a receiver on a loopback port records what
/// arrived.
@Suite("webhooks")
struct WebhookTests {
    let conversation = UUID()

    func item(_ extra: [String: JSONValue] = [:]) -> JSONValue {
        .object(["conversation_id": .string(conversation.lowercasedString), "prompt": "a heron at dawn", "width": 64, "height": 64]
            .merging(extra) { _, new in new })
    }

    func worker(_ schema: TestSchema) -> Worker {
        Worker(
            pool: schema.makePool(), handlers: [ImageJobHandler(generator: ProceduralGenerator()), WebhookDeliveryHandler(timeout: 5)],
            configuration: fastConfiguration(), logger: TestLog.quiet)
    }

    /// The delivery jobs, as the queue shows them.
    func deliveries(_ queue: JobQueue) async throws -> [Job] {
        var jobs: [Job] = []
        for delivery in try await Webhooks(pool: queue.pool).deliveries() { jobs.append(try await queue.job(delivery.id)) }
        return jobs
    }

    @Test("a job's end is delivered, signed with the submitting key's secret (checked by Python's hmac too), retried after a 5xx with the same delivery id")
    func completionIsDeliveredSigned() async throws {
        try await withServer { api, schema, queue in
            let receiver = try TestHTTPServer([.json(503, "{}"), .json(204, "")])
            defer { receiver.stop() }
            let (key, _) = try await api.keys.create(name: "backend", scopes: [.submit])
            try await Webhooks(pool: queue.pool).allow("127.0.0.1:\(receiver.port)")
            let callback = "http://127.0.0.1:\(receiver.port)/hooks/images?token=abc"

            let created = try await api.send("POST", "/v1/jobs", json: item(["callback_url": .string(callback)]), key: key)
            #expect(created.status == 201)
            let id = try #require(created.json["id"]?.stringValue)
            let running = Task { try await worker(schema).run() }
            defer { running.cancel() }
            #expect(try await eventually { receiver.received.count == 2 }, "one failed and one successful attempt")
            running.cancel()
            _ = await running.result

            let requests = receiver.received
            #expect(requests.allSatisfy { $0.path == "/hooks/images?token=abc" })
            #expect(requests.allSatisfy { $0.headers["imagejobs-event"] == "job.completed" })
            #expect(requests[0].headers["imagejobs-delivery"] != nil && requests[0].headers["imagejobs-delivery"] == requests[1].headers["imagejobs-delivery"])
            let body = try JSONDecoder().decode(JSONValue.self, from: Data(requests[1].body))
            #expect(body["type"]?.stringValue == "job.completed")
            #expect(body["data"]?["id"]?.stringValue == id)
            #expect(body["data"]?["status"]?.stringValue == "completed")
            #expect(body["data"]?["conversation_id"]?.stringValue == conversation.lowercasedString)
            #expect(body["data"]?["links"]?["image"]?.stringValue == "/v1/jobs/\(id)/image")

            let secretAnswer = try await api.send("GET", "/v1/webhook-secret", key: key)
            let secret = try #require(secretAnswer.json["secret"]?.stringValue)
            #expect(secret.hasPrefix("whsec_") && secret.count == 70)
            let signature = try #require(requests[1].headers["imagejobs-signature"])
            #expect(WebhookSignature.verify(header: signature, body: requests[1].body, secret: secret))
            #expect(!WebhookSignature.verify(header: signature, body: requests[1].body + [0x20], secret: secret), "a changed body fails")
            #expect(!WebhookSignature.verify(header: signature, body: requests[1].body, secret: secret, now: Date().addingTimeInterval(600)), "an old delivery fails")

            // The receiver's side as the docs show it, in another language's HMAC.
            let python = try #require(ProcessInfo.processInfo.environment["IMAGEJOBS_PYTHON"], "IMAGEJOBS_PYTHON (set by make test)")
            let check = try await runProcess(python, ["-c", """
                import hmac, hashlib, sys
                secret, header, body = sys.argv[1], sys.argv[2], sys.stdin.buffer.read()
                fields = dict(part.split("=", 1) for part in header.split(","))
                expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
                print("valid" if hmac.compare_digest(expected, fields["v1"]) else "invalid")
                """, secret, signature], stdin: String(decoding: requests[1].body, as: UTF8.self))
            #expect(check.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "valid", "\(check.stderr)")

            let delivery = try #require(try await deliveries(queue).first)
            #expect(delivery.status == .completed)
            #expect(delivery.priority == .high)
            #expect(delivery.errors.map(\.message) == ["127.0.0.1:\(receiver.port) answered HTTP 503"])
            #expect(delivery.params["job_id"]?.stringValue == id)
            // Another key's secret differs; the key that asked is the one that signs.
            let (other, _) = try await api.keys.create(name: "other", scopes: [.submit])
            #expect(try await api.send("GET", "/v1/webhook-secret", key: other).json["secret"]?.stringValue != secret)
            let (reader, _) = try await api.keys.create(name: "reader", scopes: [.read])
            #expect(try await api.send("GET", "/v1/webhook-secret", key: reader).status == 403)

            // The dashboard lists the delivery, and the job's page shows it; neither shows the token in the URL.
            let (admin, _) = try await api.keys.create(name: "operator", scopes: [.admin])
            let cookie = try await DashboardTests.signIn(api, key: admin)
            let list = try await api.send("GET", "/webhooks", key: nil, headers: ["Cookie": cookie])
            let listed = String(decoding: list.body, as: UTF8.self)
            #expect(list.status == 200)
            #expect(listed.contains("data-delivery=\"\(delivery.id.lowercasedString)\""))
            #expect(listed.contains("job.completed") && listed.contains("127.0.0.1:\(receiver.port)"))
            #expect(!listed.contains("token=abc"))
            let page = String(decoding: try await api.send("GET", "/jobs/\(id)", key: nil, headers: ["Cookie": cookie]).body, as: UTF8.self)
            #expect(page.contains("Webhook deliveries") && page.contains("data-delivery=\"\(delivery.id.lowercasedString)\""))
        }
    }

    @Test("a batch's completion and its items' own ends are delivered: a cancelled item, then the batch with its statuses")
    func batchCompletion() async throws {
        try await withServer { api, schema, queue in
            let receiver = try TestHTTPServer([.json(200, "{}")])
            defer { receiver.stop() }
            let (key, _) = try await api.keys.create(name: "backend", scopes: [.submit])
            try await Webhooks(pool: queue.pool).allow("http://127.0.0.1:\(receiver.port)/")
            let hook = "http://127.0.0.1:\(receiver.port)"
            let batch = try await api.send(
                "POST", "/v1/batches",
                json: .object(["jobs": .array([item(["callback_url": .string(hook + "/job")]), item()]), "callback_url": .string(hook + "/batch")]),
                key: key)
            #expect(batch.status == 201)
            let ids = try #require(batch.json["job_ids"]?.arrayValue).compactMap(\.stringValue)
            #expect(try await api.send("POST", "/v1/jobs/\(ids[0])/cancel", key: key).status == 200)

            let running = Task { try await worker(schema).run() }
            defer { running.cancel() }
            #expect(try await eventually { receiver.received.count == 2 })
            running.cancel()
            _ = await running.result

            let byPath = Dictionary(uniqueKeysWithValues: try receiver.received.map { ($0.path, try JSONDecoder().decode(JSONValue.self, from: Data($0.body))) })
            #expect(byPath["/job"]?["type"]?.stringValue == "job.cancelled")
            #expect(byPath["/job"]?["data"]?["id"]?.stringValue == ids[0])
            #expect(byPath["/job"]?["data"]?["links"]?["image"] == nil, "a cancelled job has no image to link")
            #expect(byPath["/batch"]?["type"]?.stringValue == "batch.completed")
            #expect(byPath["/batch"]?["data"]?["id"]?.stringValue == batch.json["batch_id"]?.stringValue)
            #expect(byPath["/batch"]?["data"]?["statuses"] == .object(["cancelled": 1, "completed": 1]))
            #expect(try await deliveries(queue).count == 2, "the item without a callback sent nothing")
        }
    }

    @Test("a callback to a host not allowed, not http(s), with credentials or not a string is a 422 naming callback_url; nothing is written")
    func badCallbacks() async throws {
        try await withServer { api, schema, queue in
            let (key, _) = try await api.keys.create(name: "backend", scopes: [.submit])
            try await Webhooks(pool: queue.pool).allow("hooks.example.com")
            let cases: [(JSONValue, String)] = [
                ("http://127.0.0.1:9/hook", "not an allowed webhook host"),
                ("https://hooks.example.com:8443/x", "not an allowed webhook host"),  // the entry allows the default port only
                ("ftp://hooks.example.com/x", "absolute http or https URL"),
                ("/relative", "absolute http or https URL"),
                ("https://user:pw@hooks.example.com/x", "user name or password"),
                (.string("https://hooks.example.com/" + String(repeating: "a", count: 2100)), "at most 2048"),
                (42, "must be a string"),
            ]
            for (callback, reason) in cases {
                let answer = try await api.send("POST", "/v1/jobs", json: item(["callback_url": callback]), key: key)
                #expect(answer.status == 422, "\(callback)")
                #expect(answer.json["field"]?.stringValue == "callback_url")
                #expect(answer.json["error"]?.stringValue?.contains(reason) == true, "\(answer.json)")
                #expect(answer.json["error"]?.stringValue?.contains("pw") != true)
            }
            let inBatch = try await api.send("POST", "/v1/batches", json: .array([item(), item(["callback_url": "http://10.0.0.1/"])]), key: key)
            #expect(inBatch.status == 422)
            #expect(inBatch.json["index"]?.intValue == 1, "\(inBatch.json)")
            let misspelt = try await api.send("POST", "/v1/jobs", json: item(["callbak_url": "https://hooks.example.com/"]), key: key)
            #expect(misspelt.status == 422 && misspelt.json["field"]?.stringValue == "callbak_url")
            #expect(misspelt.json["error"]?.stringValue?.contains("allowed: callback_url, conversation_id") == true, "the API's own field is among the allowed")
            let unknown = try await api.send("POST", "/v1/batches", json: .object(["jobs": .array([item()]), "callbak_url": "https://hooks.example.com/"]), key: key)
            #expect(unknown.status == 422)
            #expect(unknown.json["field"]?.stringValue == "callbak_url")
            #expect(try await schema.pool.int("SELECT count(*)::int FROM jobs") == 0)
            #expect(try await schema.pool.int("SELECT count(*)::int FROM batches") == 0)

            // The allowed one is accepted, and a resubmit with the same key keeps the first callback.
            let ok = try await api.send("POST", "/v1/jobs", json: item(["callback_url": "https://hooks.example.com/a"]), key: key, headers: ["Idempotency-Key": "k"])
            #expect(ok.status == 201)
            let again = try await api.send("POST", "/v1/jobs", json: item(["callback_url": "https://hooks.example.com/b"]), key: key, headers: ["Idempotency-Key": "k"])
            #expect(again.status == 200)
            #expect(try await schema.pool.int("SELECT count(*)::int FROM jobs WHERE webhook_url = 'https://hooks.example.com/a'") == 1)
            #expect(try await schema.pool.int("SELECT count(*)::int FROM jobs") == 1)
        }
    }

    @Test("a delivery to a host disallowed after the submit fails unsent; a redirect is not followed")
    func disallowedAndRedirect() async throws {
        try await withServer { api, schema, queue in
            let elsewhere = try TestHTTPServer([.json(200, "{}")])
            defer { elsewhere.stop() }
            let redirecting = try TestHTTPServer([.json(302, "", headers: ["Location: http://127.0.0.1:\(elsewhere.port)/stolen"])])
            defer { redirecting.stop() }
            let dropped = try TestHTTPServer([.json(200, "{}")])
            defer { dropped.stop() }
            let (key, _) = try await api.keys.create(name: "backend", scopes: [.submit])
            let webhooks = Webhooks(pool: queue.pool)
            try await webhooks.allow("127.0.0.1:\(redirecting.port)")
            try await webhooks.allow("127.0.0.1:\(dropped.port)")
            _ = try await api.send("POST", "/v1/jobs", json: item(["callback_url": .string("http://127.0.0.1:\(redirecting.port)/")]), key: key)
            _ = try await api.send("POST", "/v1/jobs", json: item(["callback_url": .string("http://127.0.0.1:\(dropped.port)/")]), key: key)
            #expect(try await webhooks.disallow("127.0.0.1:\(dropped.port)"))

            let running = Task { try await worker(schema).run() }
            defer { running.cancel() }
            let settled = try await eventually {
                let all = try await deliveries(queue)
                return all.count == 2 && all.contains { $0.status == .error } && all.contains { $0.retryCount >= 1 }
            }
            running.cancel()
            _ = await running.result
            #expect(settled)
            let all = try await deliveries(queue)
            let refused = all.first { $0.status == .error }
            #expect(refused?.errorMessage == "127.0.0.1:\(dropped.port) is no longer an allowed webhook host; not sent")
            #expect(refused?.retryCount == 0, "final at once")
            #expect(dropped.received.isEmpty)
            let redirected = all.first { $0.params["url"]?.stringValue?.contains("\(redirecting.port)") == true }
            #expect(redirected?.errors.first?.message == "127.0.0.1:\(redirecting.port) answered HTTP 302; redirects are not followed")
            #expect(!redirecting.received.isEmpty)
            #expect(elsewhere.received.isEmpty, "the redirect's target was never asked")
        }
    }
}
