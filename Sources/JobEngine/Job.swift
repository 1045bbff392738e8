import Foundation
import Postgres

/// A job's priority: `high` runs first, then `normal`, then `low`; oldest first within one.
public enum JobPriority: String, Sendable, Codable, CaseIterable, Comparable {
    case high, normal, low

    public static func < (a: JobPriority, b: JobPriority) -> Bool { a.rank < b.rank }
    var rank: Int { self == .high ? 0 : self == .normal ? 1 : 2 }
}

/// Where a job is in its life.
public enum JobStatus: String, Sendable, Codable, CaseIterable, CodingKeyRepresentable {
    /// Waiting; may run once `next_attempt_at` has passed (a retry waits out its backoff here).
    /// Moved out by a worker's claim or a cancel.
    case pending
    /// Claimed by one worker (`attempt`, `worker_id`, `heartbeat_at`, `deadline_at` set). Moved
    /// out by that worker (complete, fail, timeout) or by the sweep (lost worker, overdue).
    case running
    /// Finished with a result.
    case completed
    /// Failed for good: retries used up, a permanent failure, a timeout, or lost with no
    /// retries left; `error_message` says why. A manual retry moves it back to pending.
    case error
    /// Cancelled by a user or operator.
    case cancelled

    /// Whether the job will not change again on its own.
    public var isFinal: Bool { self == .completed || self == .error || self == .cancelled }
}

extension JobPriority: PGEncodable, PGDecodable {
    public var pgBind: PGBind { .text(rawValue) }
    public static func decode(pgText: String, type: UInt32, column: String) throws -> JobPriority {
        guard let v = JobPriority(rawValue: pgText) else {
            throw PGError(.decoding, message: "column \"\(column)\" is not a job priority", column: column)
        }
        return v
    }
}

extension JobStatus: PGEncodable, PGDecodable {
    public var pgBind: PGBind { .text(rawValue) }
    public static func decode(pgText: String, type: UInt32, column: String) throws -> JobStatus {
        guard let v = JobStatus(rawValue: pgText) else {
            throw PGError(.decoding, message: "column \"\(column)\" is not a job status", column: column)
        }
        return v
    }
}

/// Exponential backoff for retries: `base · 2^retry_count`, capped, with optional jitter.
public struct RetryBackoff: Sendable, Equatable, Codable {
    /// The first delay. Defaults to 1 s.
    public var base: Duration
    /// The longest delay. Defaults to 1 h.
    public var cap: Duration
    /// Random spread as a fraction of the delay (0.1 = ±10 %). Defaults to 0 (none).
    public var jitter: Double

    public init(base: Duration = .seconds(1), cap: Duration = .seconds(3600), jitter: Double = 0) {
        self.base = base
        self.cap = cap
        self.jitter = jitter
    }
}

extension Duration {
    /// The duration in seconds as a `Double`.
    public var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// A JSON value, for job parameters and results.
public enum JSONValue: Sendable, Equatable, Codable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n):
            if n == n.rounded(), abs(n) < 9.007e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var doubleValue: Double? { if case .number(let n) = self { return n } else { return nil } }
    public var intValue: Int? {
        if case .number(let n) = self, n == n.rounded(), abs(n) < 9.007e15 { return Int(n) }
        return nil
    }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
}

/// What to enqueue: one job.
public struct JobSpec: Sendable, Equatable {
    /// The handler that runs it.
    public var kind: String
    /// The handler's parameters, a JSON object of at most 64 KiB.
    public var params: [String: JSONValue]
    /// The group the job belongs to: a batch holds jobs of one group, idempotency keys are
    /// unique per group. An application names its own groups (a user's, a tenant's, a
    /// thread's id; any name maps to a UUID by version 5).
    public var groupID: UUID
    public var priority: JobPriority
    /// Wall-clock limit of one attempt. Defaults to 300 s.
    public var timeout: Duration
    /// Retries after the first attempt. Defaults to 3.
    public var maxRetries: Int
    /// Overrides the queue's backoff for this job.
    public var backoff: RetryBackoff?
    /// A retried submit with the same key (in the same group) returns the first job.
    public var idempotencyKey: String?
    /// Not claimable before this time (at most 366 days ahead); `nil` or a time past runs now.
    public var runAt: Date?

    public init(
        kind: String, params: [String: JSONValue], groupID: UUID,
        priority: JobPriority = .normal, timeout: Duration = .seconds(300), maxRetries: Int = 3,
        backoff: RetryBackoff? = nil, idempotencyKey: String? = nil, runAt: Date? = nil
    ) {
        self.kind = kind
        self.params = params
        self.groupID = groupID
        self.priority = priority
        self.timeout = timeout
        self.maxRetries = maxRetries
        self.backoff = backoff
        self.idempotencyKey = idempotencyKey
        self.runAt = runAt
    }

    /// ``runAt`` in whole milliseconds since 1970, as the insert binds it.
    var runAtMilliseconds: Int64? {
        runAt.map { Int64(($0.timeIntervalSince1970 * 1000).rounded(.down)) }
    }
}

/// A job as stored.
public struct Job: Sendable, Equatable, Codable {
    public var id: UUID
    public var groupID: UUID
    public var batchID: UUID?
    public var kind: String
    public var params: [String: JSONValue]
    public var priority: JobPriority
    public var status: JobStatus
    public var retryCount: Int
    public var maxRetries: Int
    public var attempt: Int
    /// How long one attempt may run.
    public var timeout: Duration
    public var nextAttemptAt: Date
    public var workerID: String?
    public var createdAt: Date
    public var startedAt: Date?
    public var heartbeatAt: Date?
    public var deadlineAt: Date?
    public var finishedAt: Date?
    public var errorMessage: String?
    /// Every failed attempt's error, oldest first.
    public var errors: [AttemptError]
    public var idempotencyKey: String?
    /// How far the running attempt's handler says it is (``JobContext/reportProgress(step:of:)``),
    /// as of its worker's last write (at most a second old); `nil` before it reports.
    public var progress: JobProgress? = nil

    enum CodingKeys: String, CodingKey {
        case id, kind, params, priority, status, attempt, timeout, errors, progress
        case groupID = "group_id", batchID = "batch_id", retryCount = "retry_count"
        case maxRetries = "max_retries", nextAttemptAt = "next_attempt_at", workerID = "worker_id"
        case createdAt = "created_at", startedAt = "started_at", heartbeatAt = "heartbeat_at"
        case deadlineAt = "deadline_at", finishedAt = "finished_at", errorMessage = "error_message"
        case idempotencyKey = "idempotency_key"
    }

    /// The timeout as seconds; ids in lower case.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeID(id, forKey: .id)
        try c.encodeID(groupID, forKey: .groupID)
        try c.encodeID(batchID, forKey: .batchID)
        try c.encode(kind, forKey: .kind)
        try c.encode(params, forKey: .params)
        try c.encode(priority, forKey: .priority)
        try c.encode(status, forKey: .status)
        try c.encode(retryCount, forKey: .retryCount)
        try c.encode(maxRetries, forKey: .maxRetries)
        try c.encode(attempt, forKey: .attempt)
        try c.encode(timeout.seconds, forKey: .timeout)
        try c.encode(nextAttemptAt, forKey: .nextAttemptAt)
        try c.encodeIfPresent(workerID, forKey: .workerID)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encodeIfPresent(startedAt, forKey: .startedAt)
        try c.encodeIfPresent(heartbeatAt, forKey: .heartbeatAt)
        try c.encodeIfPresent(deadlineAt, forKey: .deadlineAt)
        try c.encodeIfPresent(finishedAt, forKey: .finishedAt)
        try c.encodeIfPresent(errorMessage, forKey: .errorMessage)
        try c.encode(errors, forKey: .errors)
        try c.encodeIfPresent(idempotencyKey, forKey: .idempotencyKey)
        try c.encode(progress, forKey: .progress)
    }
}

/// A running attempt's progress: `step` of `total` (rows drawn, sampling steps taken).
public struct JobProgress: Sendable, Equatable, Codable {
    public var step: Int
    public var total: Int

    public init(step: Int, total: Int) {
        self.step = step
        self.total = total
    }
}

extension Job {
    /// The timeout as seconds.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(UUID.self, forKey: .id)
        groupID = try c.decode(UUID.self, forKey: .groupID)
        batchID = try c.decodeIfPresent(UUID.self, forKey: .batchID)
        kind = try c.decode(String.self, forKey: .kind)
        params = try c.decode([String: JSONValue].self, forKey: .params)
        priority = try c.decode(JobPriority.self, forKey: .priority)
        status = try c.decode(JobStatus.self, forKey: .status)
        retryCount = try c.decode(Int.self, forKey: .retryCount)
        maxRetries = try c.decode(Int.self, forKey: .maxRetries)
        attempt = try c.decode(Int.self, forKey: .attempt)
        timeout = .milliseconds(Int64((try c.decode(Double.self, forKey: .timeout) * 1000).rounded()))
        nextAttemptAt = try c.decode(Date.self, forKey: .nextAttemptAt)
        workerID = try c.decodeIfPresent(String.self, forKey: .workerID)
        createdAt = try c.decode(Date.self, forKey: .createdAt)
        startedAt = try c.decodeIfPresent(Date.self, forKey: .startedAt)
        heartbeatAt = try c.decodeIfPresent(Date.self, forKey: .heartbeatAt)
        deadlineAt = try c.decodeIfPresent(Date.self, forKey: .deadlineAt)
        finishedAt = try c.decodeIfPresent(Date.self, forKey: .finishedAt)
        errorMessage = try c.decodeIfPresent(String.self, forKey: .errorMessage)
        errors = try c.decode([AttemptError].self, forKey: .errors)
        idempotencyKey = try c.decodeIfPresent(String.self, forKey: .idempotencyKey)
        progress = try c.decodeIfPresent(JobProgress.self, forKey: .progress)
    }
}

/// The error of one failed attempt.
public struct AttemptError: Sendable, Equatable, Codable {
    public var attempt: Int
    /// When it failed, by the database's clock.
    public var at: Date
    public var message: String
    public var worker: String?
}

/// A pending job's place in the queue.
public struct QueuePosition: Sendable, Equatable, Codable {
    public var id: UUID
    public var status: JobStatus
    /// Claimable jobs a claim takes before this one (0 = next), in claim order; `nil` unless
    /// pending and claimable (a job waiting at a gate has no place yet: see ``waiting``).
    public var position: Int?
    /// How many of those are of higher priority.
    public var aheadHigherPriority: Int?
    /// Seconds until a worker starts it: for a queued job, from the completion rate of the last
    /// minute (`nil` when nothing completed recently); for a waiting one, until its gate opens
    /// (`nil` when that cannot be told, as under a pause).
    public var etaSeconds: Double?
    /// Completions per second over the last minute.
    public var completionRate: Double
    /// Why a pending job is not simply queued, or `nil` when it is.
    public var waiting: JobWait?

    public init(
        id: UUID, status: JobStatus, position: Int?, aheadHigherPriority: Int?, etaSeconds: Double?,
        completionRate: Double, waiting: JobWait? = nil
    ) {
        self.id = id
        self.status = status
        self.position = position
        self.aheadHigherPriority = aheadHigherPriority
        self.etaSeconds = etaSeconds
        self.completionRate = completionRate
        self.waiting = waiting
    }

    enum CodingKeys: String, CodingKey {
        case id, status, position, waiting
        case aheadHigherPriority = "ahead_higher_priority", etaSeconds = "eta_seconds", completionRate = "completion_rate"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeID(id, forKey: .id)
        try c.encode(status, forKey: .status)
        try c.encodeIfPresent(position, forKey: .position)
        try c.encodeIfPresent(aheadHigherPriority, forKey: .aheadHigherPriority)
        try c.encodeIfPresent(etaSeconds, forKey: .etaSeconds)
        try c.encode(completionRate, forKey: .completionRate)
        try c.encodeIfPresent(waiting, forKey: .waiting)
    }
}

/// Why a pending job waits, and until when.
public struct JobWait: Sendable, Equatable, Codable {
    public enum Reason: String, Sendable, Codable, CaseIterable {
        /// Its kind (or the whole queue) is paused; it keeps its place.
        case paused
        /// Submitted to run at a later time.
        case scheduled
        /// A retry waiting out its backoff (or a backend's `Retry-After`).
        case retryBackoff = "retry_backoff"
        /// Its group already runs as many jobs of its kind as the cap allows.
        case groupCap = "group_cap"
        /// Its kind's rate limit has no token left in the current period.
        case rateLimit = "rate_limit"
        /// No gate holds it; the admitter's next round (within about 100 ms) makes it claimable.
        case admitting
    }

    public var reason: Reason
    /// When the gate opens: exact for a scheduled job or a retry, an estimate under a cap or
    /// rate limit, `nil` under a pause.
    public var until: Date?

    public init(reason: Reason, until: Date?) {
        self.reason = reason
        self.until = until
    }
}

/// The jobs of a batch, counted per status.
public struct BatchProgress: Sendable, Equatable, Codable {
    public var batchID: UUID
    public var groupID: UUID
    public var total: Int
    /// Jobs per status, every status present.
    public var counts: [JobStatus: Int]
    public var createdAt: Date
    /// When its last job finished, as the batch records it (within about 100 ms of that job).
    public var finishedAt: Date?

    /// Whether every job of the batch is final.
    public var isFinished: Bool {
        JobStatus.allCases.filter(\.isFinal).reduce(0) { $0 + counts[$1, default: 0] } == total
    }

    enum CodingKeys: String, CodingKey {
        case batchID = "batch_id", groupID = "group_id", total, counts, createdAt = "created_at", finishedAt = "finished_at"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeID(batchID, forKey: .batchID)
        try c.encodeID(groupID, forKey: .groupID)
        try c.encode(total, forKey: .total)
        try c.encode(counts, forKey: .counts)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encodeIfPresent(finishedAt, forKey: .finishedAt)
    }
}

/// A submitted batch.
public struct SubmittedBatch: Sendable, Equatable, Codable {
    public var batchID: UUID
    public var jobIDs: [UUID]
    /// `false` when an idempotency key matched an earlier batch and nothing new was written.
    public var created: Bool

    enum CodingKeys: String, CodingKey {
        case batchID = "batch_id", jobIDs = "job_ids", created
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeID(batchID, forKey: .batchID)
        try c.encode(jobIDs.map(\.lowercasedString), forKey: .jobIDs)
        try c.encode(created, forKey: .created)
    }
}

extension UUID {
    /// The id as RFC 4122 writes it, in lower case: the form PostgreSQL prints, so ids match
    /// between this package's output and SQL. (`uuidString` is upper-case.) Input is read in
    /// either case.
    public var lowercasedString: String { uuidString.lowercased() }
}

extension KeyedEncodingContainer {
    /// Encodes an id in its lower-case form (JSON's default for `UUID` is upper-case).
    mutating func encodeID(_ id: UUID?, forKey key: Key) throws {
        try encodeIfPresent(id?.lowercasedString, forKey: key)
    }
}

/// UUID version 7: time-ordered, so ids of new jobs land at the right edge of the primary key.
public enum UUIDv7 {
    public static func make(now: Date = Date()) -> UUID {
        let ms = UInt64(now.timeIntervalSince1970 * 1000)
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: ms >> (40 - 8 * UInt64(i))) }
        var random = SystemRandomNumberGenerator()
        let (r1, r2) = (random.next(), random.next())  // two draws, not one per byte
        for i in 6..<16 { bytes[i] = UInt8(truncatingIfNeeded: (i < 14 ? r1 : r2) >> (UInt64(i % 8) * 8)) }
        bytes[6] = 0x70 | (bytes[6] & 0x0f)
        bytes[8] = 0x80 | (bytes[8] & 0x3f)
        return UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                           bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension JSONValue {
    /// Compact JSON text (keys sorted), written directly rather than through `JSONEncoder`,
    /// which is slow on the submit path. Non-finite numbers become `null` (validation rejects
    /// them first).
    public var jsonText: String {
        var w = JSONBytes()
        w.value(self)
        return w.string
    }
}

/// A compact JSON writer into UTF-8 bytes: the submit path's serializer. It notes what
/// validation refuses (NUL characters, non-finite numbers) as it writes, so a job's
/// parameters are walked once.
struct JSONBytes {
    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)
    var bytes: [UInt8] = []
    private(set) var sawNUL = false
    private(set) var sawNonFinite = false

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    var string: String { String(decoding: bytes, as: UTF8.self) }

    mutating func value(_ v: JSONValue) {
        switch v {
        case .null: raw("null")
        case .bool(let b): raw(b ? "true" : "false")
        case .number(let n): number(n)
        case .string(let s): string(s)
        case .array(let a):
            bytes.append(UInt8(ascii: "["))
            for (i, item) in a.enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                value(item)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let o):
            bytes.append(UInt8(ascii: "{"))
            var first = true
            for (key, item) in o.sorted(by: { $0.key < $1.key }) {
                if !first { bytes.append(UInt8(ascii: ",")) }
                first = false
                string(key)
                bytes.append(UInt8(ascii: ":"))
                value(item)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func raw(_ other: [UInt8]) { bytes.append(contentsOf: other) }

    mutating func number(_ n: Double) {
        if !n.isFinite {
            sawNonFinite = true
            raw("null")
        } else if n == n.rounded(), abs(n) < 9.007e15 {
            int(Int64(n))
        } else {
            bytes.append(contentsOf: "\(n)".utf8)
        }
    }

    mutating func int(_ n: Int64) {
        if n == 0 {
            bytes.append(UInt8(ascii: "0"))
            return
        }
        if n < 0 { bytes.append(UInt8(ascii: "-")) }
        var v = n.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buf in
            while v > 0 {
                buf[count] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
                count += 1
            }
            for i in stride(from: count - 1, through: 0, by: -1) { bytes.append(buf[i]) }
        }
    }

    /// A string, escaped: quote, backslash and control characters; everything else is copied
    /// as UTF-8, in runs.
    mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            var run = 0
            for i in 0..<utf8.count {
                let b = utf8[i]
                guard b < 0x20 || b == 0x22 || b == 0x5C else { continue }
                if i > run { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run..<i])) }
                run = i + 1
                switch b {
                case 0x22: raw("\\\"")
                case 0x5C: raw("\\\\")
                case 0x0A: raw("\\n")
                case 0x0D: raw("\\r")
                case 0x09: raw("\\t")
                default:
                    if b == 0 { sawNUL = true }
                    raw("\\u00")
                    bytes.append(Self.hex[Int(b >> 4)])
                    bytes.append(Self.hex[Int(b & 0xF)])
                }
            }
            if utf8.count > run { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run..<utf8.count])) }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// A UUID as a lower-case JSON string, without building a `String`.
    mutating func uuid(_ id: UUID) {
        bytes.append(UInt8(ascii: "\""))
        withUnsafeBytes(of: id.uuid) { raw in
            for (i, b) in raw.enumerated() {
                if i == 4 || i == 6 || i == 8 || i == 10 { bytes.append(UInt8(ascii: "-")) }
                bytes.append(Self.hex[Int(b >> 4)])
                bytes.append(Self.hex[Int(b & 0xF)])
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension JSONValue {
    /// Parses JSON text (RFC 8259) into a value.
    public static func parse(_ text: String) throws -> JSONValue {
        var parser = JSONReader(bytes: Array(text.utf8))
        let value = try parser.value()
        parser.skipSpace()
        guard parser.at == parser.bytes.count else { throw parser.error("trailing characters") }
        return value
    }
}

/// A small JSON reader over UTF-8 bytes.
struct JSONReader {
    let bytes: [UInt8]
    var at = 0

    func error(_ what: String) -> JobQueueError {
        JobQueueError(.invalidInput, "invalid JSON at byte \(at): \(what)")
    }

    mutating func skipSpace() {
        while at < bytes.count, bytes[at] == 0x20 || bytes[at] == 0x0a || bytes[at] == 0x0d || bytes[at] == 0x09 { at += 1 }
    }

    mutating func value() throws -> JSONValue {
        skipSpace()
        guard at < bytes.count else { throw error("unexpected end") }
        switch bytes[at] {
        case UInt8(ascii: "{"):
            at += 1
            var o: [String: JSONValue] = [:]
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "}") { at += 1; return .object(o) }
            while true {
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") else { throw error("expected a key") }
                let key = try string()
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: ":") else { throw error("expected ':'") }
                at += 1
                o[key] = try value()
                skipSpace()
                guard at < bytes.count else { throw error("unexpected end") }
                if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                if bytes[at] == UInt8(ascii: "}") { at += 1; return .object(o) }
                throw error("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            at += 1
            var a: [JSONValue] = []
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "]") { at += 1; return .array(a) }
            while true {
                a.append(try value())
                skipSpace()
                guard at < bytes.count else { throw error("unexpected end") }
                if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                if bytes[at] == UInt8(ascii: "]") { at += 1; return .array(a) }
                throw error("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default:
            let start = at
            while at < bytes.count, (48...57).contains(bytes[at]) || [45, 43, 46, 101, 69].contains(bytes[at]) { at += 1 }
            guard at > start, let n = Double(String(decoding: bytes[start..<at], as: UTF8.self)) else { throw error("expected a value") }
            return .number(n)
        }
    }

    mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard at + w.count <= bytes.count, Array(bytes[at..<(at + w.count)]) == w else { throw error("expected \(word)") }
        at += w.count
    }

    mutating func string() throws -> String {
        at += 1  // opening quote
        var out = [UInt8]()
        while at < bytes.count {
            let c = bytes[at]
            if c == UInt8(ascii: "\"") { at += 1; return String(decoding: out, as: UTF8.self) }
            if c == UInt8(ascii: "\\") {
                at += 1
                guard at < bytes.count else { break }
                let e = bytes[at]
                at += 1
                switch e {
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0c)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar), at + 1 < bytes.count, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") {
                        at += 2
                        let low = try hex4()
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    out += Array(String(Unicode.Scalar(scalar).map(Character.init) ?? "\u{FFFD}").utf8)
                default: out.append(e)  // \" \\ \/
                }
                continue
            }
            out.append(c)
            at += 1
        }
        throw error("unterminated string")
    }

    mutating func hex4() throws -> UInt32 {
        guard at + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[at..<(at + 4)], as: UTF8.self), radix: 16) else {
            throw error("bad \\u escape")
        }
        at += 4
        return v
    }
}
