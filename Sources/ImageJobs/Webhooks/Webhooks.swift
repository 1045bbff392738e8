import Foundation
import JobEngine
import Postgres

/// Webhooks (migration 0021): the hosts the operator allows callbacks to, the callback a submit
/// names, and how deliveries are signed. Deliveries themselves are jobs of the queue
/// (``WebhookDeliveryHandler``), submitted by the database when a job or batch finishes.
public struct Webhooks: Sendable {
    let pool: PGPool

    public init(pool: PGPool) { self.pool = pool }

    /// The kind of the jobs that deliver webhooks.
    public static let deliveryKind = "webhook.deliver"

    /// Allows callbacks to `host` (`name`, `name:port`, or a URL whose host and port are taken).
    /// - Returns: the entry as stored (lower case, the port only when one was given).
    @discardableResult
    public func allow(_ host: String) async throws -> String {
        let entry = try Self.entry(host)
        try await pool.query("INSERT INTO webhook_hosts (host) VALUES (\(entry)) ON CONFLICT (host) DO NOTHING")
        return entry
    }

    /// Stops allowing `host`; deliveries still queued for it fail without being sent.
    /// - Returns: `false` if the host was not allowed.
    public func disallow(_ host: String) async throws -> Bool {
        !(try await pool.query("DELETE FROM webhook_hosts WHERE host = \(try Self.entry(host)) RETURNING host")).isEmpty
    }

    /// The allowed hosts, in order.
    public func hosts() async throws -> [String] {
        try await pool.query("SELECT host FROM webhook_hosts ORDER BY host").map { try $0.decode("host") }
    }

    /// Takes `callback_url` out of a submitted item's fields (the rest is the batch-file item
    /// the queue validates) and checks it: an absolute http(s) URL of at most 2,048
    /// characters, without credentials, to an allowed host. `nil` when absent or null. Errors
    /// name the field (and the batch item) and never list the allowed hosts.
    public func takeCallback(from fields: inout [String: JSONValue], index: Int?) async throws -> URL? {
        var allowed = Set<String>()
        return try await takeCallback(from: &fields, index: index, allowed: &allowed)
    }

    /// The same, for the items of one request: `allowed` holds the hosts already found allowed,
    /// so a batch whose items name one host asks the database once.
    public func takeCallback(from fields: inout [String: JSONValue], index: Int?, allowed: inout Set<String>) async throws -> URL? {
        guard let value = fields.removeValue(forKey: "callback_url"), value != .null else { return nil }
        guard case .string(let text) = value else {
            throw JobQueueError(.invalidInput, "callback_url must be a string", field: "callback_url", index: index)
        }
        let (url, authority) = try Self.parseCallback(text, field: "callback_url", index: index)
        if allowed.contains(authority) { return url }
        guard try await pool.query("SELECT 1 FROM webhook_hosts WHERE host = \(authority)").first != nil else {
            throw JobQueueError(
                .invalidInput,
                "callback_url's host \"\(authority.prefix(100))\" is not an allowed webhook host (an operator allows one with `imagejobs webhooks allow HOST`)",
                field: "callback_url", index: index)
        }
        allowed.insert(authority)
        return url
    }

    /// Submits a job whose end is delivered to `callback`, signed with the secret of the API
    /// key `keyID`: the job and its callback commit together (a resubmit with an idempotency
    /// key already used returns the earlier job, which keeps its own callback).
    public func submit(_ spec: JobSpec, callback: URL?, keyID: UUID, queue: JobQueue) async throws -> (job: Job, created: Bool) {
        guard let callback else { return try await queue.submit(spec) }
        return try await pool.withConnection { connection in
            try await connection.transaction { connection in
                let submitted = try await queue.submit(spec, on: connection)
                if submitted.created {
                    try await connection.query("""
                        UPDATE jobs SET webhook_url = \(callback.absoluteString), webhook_key = \(keyID) WHERE id = \(submitted.job.id)
                        """)
                }
                return submitted
            }
        }
    }

    /// Submits a batch whose completion is delivered to `callback` and whose jobs' ends are
    /// delivered to `jobCallbacks[i]` (one per spec, `nil` for none), all in one transaction.
    public func submitBatch(
        _ specs: [JobSpec], groupID: UUID, idempotencyKey: String?, callback: URL?, jobCallbacks: [URL?], keyID: UUID, queue: JobQueue
    ) async throws -> SubmittedBatch {
        guard callback != nil || jobCallbacks.contains(where: { $0 != nil }) else {
            return try await queue.submitBatch(specs, groupID: groupID, idempotencyKey: idempotencyKey)
        }
        do {
            return try await pool.withConnection { connection in
                try await connection.transaction { connection in
                    let submitted = try await queue.submitBatch(specs, groupID: groupID, idempotencyKey: idempotencyKey, on: connection)
                    if let callback {
                        try await connection.query("""
                            UPDATE batches SET webhook_url = \(callback.absoluteString), webhook_key = \(keyID) WHERE id = \(submitted.batchID)
                            """)
                    }
                    let named = zip(submitted.jobIDs, jobCallbacks).compactMap { id, url in url.map { (id.lowercasedString, $0.absoluteString) } }
                    if !named.isEmpty {
                        try await connection.query("""
                            UPDATE jobs j SET webhook_url = c.url, webhook_key = \(keyID)
                            FROM unnest(\(named.map(\.0))::uuid[], \(named.map(\.1))::text[]) AS c (id, url) WHERE j.id = c.id
                            """)
                    }
                    return submitted
                }
            }
        } catch where (JobQueueError.from(error) as? JobQueueError)?.code == .duplicate && idempotencyKey != nil {
            // The batch's key was used before: answer with that batch, which keeps its callbacks.
            return try await queue.submitBatch(specs, groupID: groupID, idempotencyKey: idempotencyKey)
        }
    }

    /// The latest deliveries, newest first: all of them, or those of one job or batch. Read
    /// from the delivery jobs' own partial indexes, so the cost does not grow with the queue.
    public func deliveries(of subject: UUID? = nil, limit: Int = 50) async throws -> [WebhookDelivery] {
        guard (1...1000).contains(limit) else {
            throw JobQueueError(.invalidInput, "limit must be between 1 and 1000", field: "limit")
        }
        var query: PGQuery = """
            SELECT id, params ->> 'event' AS event, params ->> 'url' AS url, (params ->> 'job_id')::uuid AS subject, status::text AS status,
                   attempt, retry_count, max_retries, error_message, errors::text AS errors, created_at, next_attempt_at, finished_at
            FROM jobs
            WHERE kind = 'webhook.deliver' AND (\(subject?.lowercasedString)::text IS NULL OR params ->> 'job_id' = \(subject?.lowercasedString)::text)
            ORDER BY id DESC LIMIT \(limit)
            """
        query.prepare = false  // planned for the value given: with a subject, its own index
        return try await pool.query(query).map(WebhookDelivery.init)
    }

    /// The secret that signs deliveries of callbacks named with the API key `keyID`.
    public func secret(keyID: UUID) async throws -> String? {
        try await pool.query("SELECT webhook_secret FROM api_keys WHERE id = \(keyID)").first?.decode("webhook_secret")
    }

    /// The URL and its `host[:port]` as allowed hosts are written, or an error naming `field`.
    static func parseCallback(_ text: String, field: String, index: Int? = nil) throws -> (URL, String) {
        guard text.utf8.count <= 2048 else {
            throw JobQueueError(.invalidInput, "\(field) must be at most 2048 characters", field: field, index: index)
        }
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let authority = authority(of: url)
        else {
            throw JobQueueError(.invalidInput, "\(field) must be an absolute http or https URL", field: field, index: index)
        }
        guard url.user == nil, url.password == nil else {
            throw JobQueueError(.invalidInput, "\(field) must not carry a user name or password", field: field, index: index)
        }
        return (url, authority)
    }

    /// `host` or `host:port` (the port only when the URL names one), lower case.
    static func authority(of url: URL) -> String? {
        guard let host = url.host?.lowercased(), !host.isEmpty else { return nil }
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return url.port.map { "\(bracketed):\($0)" } ?? bracketed
    }

    /// An allowed-host entry from what an operator typed.
    static func entry(_ text: String) throws -> String {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let url = URL(string: trimmed.contains("://") ? trimmed : "http://\(trimmed)")
        guard let url, let authority = authority(of: url), url.path.isEmpty || trimmed.contains("://") else {
            throw JobQueueError(.invalidInput, "give a host as NAME, NAME:PORT or a URL, got \"\(trimmed.prefix(100))\"", field: "host")
        }
        return authority
    }
}

/// How a delivery is signed: `ImageJobs-Signature: t=<unix seconds>,v1=<hex>`, where the hex is
/// HMAC-SHA256, keyed with the secret's UTF-8 bytes, of `"<t>." + body`. A receiver recomputes
/// it over the raw body and refuses old timestamps (replays).
public enum WebhookSignature {
    public static func header(secret: String, timestamp: Int, body: [UInt8]) -> String {
        "t=\(timestamp),v1=\(SHA256.hex(SHA256.hmac(key: Array(secret.utf8), message: Array("\(timestamp).".utf8) + body)))"
    }

    /// Whether `header` signs `body` with `secret`, at most `tolerance` seconds from `now`.
    public static func verify(header: String, body: [UInt8], secret: String, now: Date = Date(), tolerance: Double = 300) -> Bool {
        var timestamp: Int?
        var signatures: [String] = []
        for part in header.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { continue }
            if pair[0] == "t" { timestamp = Int(pair[1]) } else if pair[0] == "v1" { signatures.append(pair[1]) }
        }
        guard let timestamp, abs(now.timeIntervalSince1970 - Double(timestamp)) <= tolerance else { return false }
        let expected = Array(Self.header(secret: secret, timestamp: timestamp, body: body).split(separator: "=").last!.utf8)
        return signatures.contains { SHA256.constantTimeEqual(Array($0.utf8), expected) }
    }
}

/// One webhook delivery as operators see it: what, where to (the host; the URL's path and query
/// may carry the receiver's token), and how its attempts went.
public struct WebhookDelivery: Sendable, Codable, Equatable {
    public var id: UUID
    public var event: String
    public var host: String
    /// The job or batch the event is about.
    public var subject: UUID?
    public var status: JobStatus
    public var attempts: Int
    public var retryCount: Int
    public var maxRetries: Int
    /// The last attempt's error, while retrying or once failed.
    public var lastError: String?
    public var createdAt: Date
    public var nextAttemptAt: Date
    public var finishedAt: Date?

    enum CodingKeys: String, CodingKey {
        case id, event, host, subject, status, attempts, lastError = "last_error", retryCount = "retry_count", maxRetries = "max_retries"
        case createdAt = "created_at", nextAttemptAt = "next_attempt_at", finishedAt = "finished_at"
    }

    init(_ row: PGRow) throws {
        id = try row.decode("id")
        event = try row.decode("event", as: String?.self) ?? "?"
        host = (try row.decode("url", as: String?.self)).flatMap(URL.init(string:)).flatMap(Webhooks.authority(of:)) ?? "?"
        subject = try row.decode("subject")
        status = try row.decode("status")
        attempts = try row.decode("attempt")
        retryCount = try row.decode("retry_count")
        maxRetries = try row.decode("max_retries")
        var lastAttempt: String?
        if case .array(let errors) = try JSONValue.parse(try row.decode("errors", as: String.self)) {
            lastAttempt = errors.last?["message"]?.stringValue
        }
        lastError = try row.decode("error_message", as: String?.self) ?? lastAttempt
        createdAt = try row.decode("created_at")
        nextAttemptAt = try row.decode("next_attempt_at")
        finishedAt = try row.decode("finished_at")
    }
}
