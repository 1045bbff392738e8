import Foundation

/// The arguments of one kind of job: a `Codable` value, stored as the job's `params` (a JSON
/// object) and decoded again for its handler.
///
/// ```swift
/// struct WelcomeMail: JobArguments {
///     static let kind = "mail.welcome"
///     var userID: Int
///     var locale: String
/// }
///
/// try await queue.submit(try JobSpec(WelcomeMail(userID: 7, locale: "de"), groupID: account))
/// let worker = Worker(pool: pool, handlers: [ClosureJobHandler(WelcomeMail.self) { mail, job, context in
///     try await send(mail)
///     return JobResult()
/// }], configuration: WorkerConfiguration(), logger: logger)
/// ```
public protocol JobArguments: Codable, Sendable {
    /// The kind jobs with these arguments are stored under and run by.
    static var kind: String { get }

    /// Checks the arguments before they are enqueued (``JobSpec/init(_:groupID:priority:timeout:maxRetries:backoff:idempotencyKey:)``
    /// calls it, so typed arguments that fail it are never enqueued). Throw a ``JobQueueError``
    /// `.invalidInput` naming the field. Does nothing unless a type says otherwise.
    func validate() throws
}

extension JobArguments {
    public func validate() throws {}
}

/// How typed arguments become params and back: keys as the type's `CodingKeys` say, dates as
/// ISO 8601 with milliseconds (readable from SQL, and exact to the millisecond).
public enum JobArgumentsCoding {
    /// The arguments as a job's params.
    /// - Throws: ``JobQueueError`` `.invalidInput` (field `params`) when they do not encode to a
    ///   JSON object.
    public static func params<A: JobArguments>(_ arguments: A) throws -> [String: JSONValue] {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(formatter().string(from: date))
        }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: try encoder.encode(arguments))
        } catch {
            throw JobQueueError(.invalidInput, "the arguments of kind \(A.kind) do not encode to JSON: \(describe(error))", field: "params")
        }
        guard case .object(let params) = value else {
            throw JobQueueError(.invalidInput, "the arguments of kind \(A.kind) must encode to a JSON object", field: "params")
        }
        return params
    }

    /// A job's params as typed arguments.
    public static func arguments<A: JobArguments>(_ type: A.Type, from params: [String: JSONValue]) throws -> A {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = formatter().date(from: text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an ISO 8601 date"))
            }
            return date
        }
        return try decoder.decode(A.self, from: try JSONEncoder().encode(JSONValue.object(params)))
    }

    private static func formatter() -> ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }

    /// A coding error by where it happened and what kind it is, never by the value.
    static func describe(_ error: any Error) -> String {
        func path(_ keys: [any CodingKey]) -> String { keys.isEmpty ? "the top level" : keys.map(\.stringValue).joined(separator: ".") }
        switch error as? DecodingError {
        case .typeMismatch(let type, let context)?: return "\(path(context.codingPath)) is not \(type)"
        case .valueNotFound(let type, let context)?: return "\(path(context.codingPath)) is missing a \(type)"
        case .keyNotFound(let key, let context)?: return "\(path(context.codingPath + [key])) is missing"
        case .dataCorrupted(let context)?: return "\(path(context.codingPath)) is malformed"
        default: return "\(type(of: error))"
        }
    }
}

extension JobSpec {
    /// A spec for typed arguments, validated (``JobArguments/validate()``): their kind, and
    /// their encoding as params.
    /// - Throws: ``JobQueueError`` `.invalidInput` when they are invalid or do not encode to a
    ///   JSON object.
    public init<A: JobArguments>(
        _ arguments: A, groupID: UUID, priority: JobPriority = .normal, timeout: Duration = .seconds(300), maxRetries: Int = 3,
        backoff: RetryBackoff? = nil, idempotencyKey: String? = nil
    ) throws {
        try arguments.validate()
        self.init(
            kind: A.kind, params: try JobArgumentsCoding.params(arguments), groupID: groupID, priority: priority, timeout: timeout,
            maxRetries: maxRetries, backoff: backoff, idempotencyKey: idempotencyKey)
    }
}

/// A handler of typed jobs: the worker decodes each job's params into `Arguments` and calls
/// ``run(_:job:context:)``. A job whose params do not decode fails for good (a retry would
/// not decode them either), its error naming the field, never the value.
public protocol TypedJobHandler: JobHandler {
    associatedtype Arguments: JobArguments
    func run(_ arguments: Arguments, job: ClaimedJob, context: JobContext) async throws -> JobResult
}

extension TypedJobHandler {
    public var kind: String { Arguments.kind }

    public func run(_ job: ClaimedJob, context: JobContext) async throws -> JobResult {
        let arguments: Arguments
        do {
            arguments = try JobArgumentsCoding.arguments(Arguments.self, from: job.job.params)
        } catch {
            throw JobFailure.permanent("the params of this \(Arguments.kind) job do not decode: \(JobArgumentsCoding.describe(error))")
        }
        return try await run(arguments, job: job, context: context)
    }
}

/// A typed handler made of a closure.
public struct ClosureJobHandler<Arguments: JobArguments>: TypedJobHandler {
    let body: @Sendable (Arguments, ClaimedJob, JobContext) async throws -> JobResult

    public init(
        _ type: Arguments.Type = Arguments.self, _ body: @escaping @Sendable (Arguments, ClaimedJob, JobContext) async throws -> JobResult
    ) {
        self.body = body
    }

    public func run(_ arguments: Arguments, job: ClaimedJob, context: JobContext) async throws -> JobResult {
        try await body(arguments, job, context)
    }
}
