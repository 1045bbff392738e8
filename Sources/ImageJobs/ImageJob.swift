import Foundation
import JobEngine

/// The image product's job: its kind, and the one way a request becomes a job spec. Every door
/// goes through here (the CLI's flags and batch files; SQL's `submit_job` applies the same rules
/// in the database), so a caller cannot submit image parameters that were not validated.
public enum ImageJob {
    /// The kind image jobs are stored under.
    public static let kind = ImageJobParameters.kind

    /// The keys of one batch-file item (also `submit_job`'s for image jobs).
    public static let itemFields: [String] = [
        "conversation_id", "height", "idempotency_key", "kind", "max_retries", "model",
        "negative_prompt", "priority", "prompt", "run_at", "seed", "steps", "timeout", "width",
    ]

    /// A validated spec: the image parameters are checked here; the queue checks the rest
    /// (timeout, retries, idempotency key) when it is submitted.
    /// - Throws: ``JobQueueError`` `.invalidInput` naming the field (and `index`, in a batch).
    public static func spec(
        conversationID: UUID, parameters: ImageJobParameters, priority: JobPriority = .normal, timeout: Double = 300,
        maxRetries: Int = 3, idempotencyKey: String? = nil, runAt: Date? = nil, index: Int? = nil
    ) throws -> JobSpec {
        try parameters.validate(limits: ImageLimits(), index: index)
        // A number no Duration holds (or not a number) fails here; the queue checks the range.
        guard timeout.isFinite, abs(timeout) < 1e9 else {
            throw JobQueueError(.invalidInput, "timeout must be a number of seconds (1 to 86400 unless the queue's limits say otherwise)", field: "timeout", index: index)
        }
        return JobSpec(
            kind: kind, params: parameters.jsonObject, groupID: conversationID, priority: priority,
            timeout: .milliseconds(Int64((timeout * 1000).rounded())), maxRetries: maxRetries, idempotencyKey: idempotencyKey,
            runAt: runAt)
    }

    /// A start time as batch files and `submit_job` write it: ISO 8601 with a zone.
    public static func runAt(_ text: String, index: Int? = nil) throws -> Date {
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        guard let date = (try? Date(text, strategy: .iso8601)) ?? (try? Date(text, strategy: withFraction)) else {
            throw JobQueueError(
                .invalidInput, "run_at must be an ISO 8601 time with a zone, like 2026-12-24T18:00:00Z", field: "run_at", index: index)
        }
        return date
    }

    /// Reads one item (a JSON object with ``itemFields``' keys) into a validated spec.
    /// - Parameter doorFields: fields the calling door reads itself and has taken out (the HTTP
    ///   API's `callback_url`), named among the allowed ones when an unknown field is refused.
    public static func spec(item: JSONValue, index: Int? = nil, doorFields: [String] = []) throws -> JobSpec {
        func bad(_ field: String, _ message: String) -> JobQueueError {
            JobQueueError(.invalidInput, message, field: field, index: index)
        }
        guard case .object(let o) = item else {
            throw JobQueueError(.invalidInput, index == nil ? "a job must be a JSON object" : "each batch item must be a JSON object", index: index)
        }
        func string(_ key: String) throws -> String? {
            guard let v = o[key], v != .null else { return nil }
            guard let s = v.stringValue else { throw bad(key, "\(key) must be a string") }
            return s
        }
        func integer(_ key: String) throws -> Int64? {
            guard let v = o[key], v != .null else { return nil }
            guard let n = v.intValue else { throw bad(key, "\(key) must be an integer") }
            return Int64(n)
        }
        func number(_ key: String) throws -> Double? {
            guard let v = o[key], v != .null else { return nil }
            guard let n = v.doubleValue else { throw bad(key, "\(key) must be a number") }
            return n
        }
        if let kind = try string("kind"), kind != Self.kind {
            throw bad("kind", "kind must be \(Self.kind) for an image job; other kinds are submitted through the engine's API or submit_job")
        }
        if let unknown = o.keys.sorted().first(where: { !itemFields.contains($0) }) {
            throw bad(unknown, "unknown field \"\(unknown.prefix(40))\"; allowed: \((itemFields + doorFields).sorted().joined(separator: ", "))")
        }
        guard let conversation = try string("conversation_id") else { throw bad("conversation_id", "conversation_id is required") }
        guard let conversationID = UUID(uuidString: conversation) else { throw bad("conversation_id", "conversation_id is not a UUID") }
        guard let prompt = try string("prompt") else { throw bad("prompt", "prompt is required") }
        let parameters = ImageJobParameters(
            prompt: prompt, negativePrompt: try string("negative_prompt"), width: Int(try integer("width") ?? 512),
            height: Int(try integer("height") ?? 512), steps: Int(try integer("steps") ?? 30), seed: try integer("seed"),
            model: try string("model"))
        return try spec(
            conversationID: conversationID, parameters: parameters,
            priority: try priority(try string("priority") ?? "normal", index: index),
            timeout: try number("timeout") ?? 300, maxRetries: Int(try integer("max_retries") ?? 3),
            idempotencyKey: try string("idempotency_key"), runAt: try string("run_at").map { try runAt($0, index: index) }, index: index)
    }

    /// Reads the items of a batch, in order: each item, then that it belongs to the first
    /// item's conversation, then that its idempotency key is not an earlier item's.
    /// - Returns: the specs and their conversation, for ``JobQueue/submitBatch(_:groupID:idempotencyKey:)``.
    public static func batch(items: [JSONValue], doorFields: [String] = []) throws -> (specs: [JobSpec], conversationID: UUID) {
        guard !items.isEmpty else { throw JobQueueError(.invalidInput, "a batch needs at least one job", field: "jobs") }
        var specs: [JobSpec] = []
        var keys = Set<String>()
        for (i, item) in items.enumerated() {
            let spec = try spec(item: item, index: i, doorFields: doorFields)
            if let first = specs.first, spec.groupID != first.groupID {
                throw JobQueueError(
                    .invalidInput,
                    "conversation_id \(spec.groupID.lowercasedString) differs from the batch's \(first.groupID.lowercasedString); every job of a batch belongs to one conversation",
                    field: "conversation_id", index: i)
            }
            if let key = spec.idempotencyKey, !keys.insert(key).inserted {
                throw JobQueueError(.invalidInput, "idempotency_key repeats an earlier item of the batch", field: "idempotency_key", index: i)
            }
            specs.append(spec)
        }
        return (specs, specs[0].groupID)
    }

    /// A priority by name.
    public static func priority(_ text: String, index: Int? = nil) throws -> JobPriority {
        guard let p = JobPriority(rawValue: text) else {
            throw JobQueueError(.invalidInput, "priority must be high, normal or low, got \"\(text.prefix(20))\"", field: "priority", index: index)
        }
        return p
    }
}
