import Foundation
import JobEngine
import Logging

/// What a generator is asked to draw.
public struct ImageRequest: Sendable, Equatable {
    public var jobID: UUID
    public var attempt: Int
    public var parameters: ImageJobParameters
    /// Seconds until the job's deadline; backends bound their own timeouts by it.
    public var remainingSeconds: Double

    public init(jobID: UUID, attempt: Int, parameters: ImageJobParameters, remainingSeconds: Double) {
        self.jobID = jobID
        self.attempt = attempt
        self.parameters = parameters
        self.remainingSeconds = remainingSeconds
    }
}

/// A generated image.
public struct GeneratedImage: Sendable, Equatable {
    public var png: [UInt8]
    public var width: Int
    public var height: Int
    /// The backend's name (`procedural`, `automatic1111`, `openai`, `command`).
    public var backend: String
    /// Backend-specific facts worth keeping (model, seed used…), never secrets.
    public var metadata: [String: String]
}

/// Why generation failed, classified so the engine's retry policy can act on it.
public enum ImageGenerationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// May succeed later (HTTP 429 or 5xx, a refused connection, a crashed command).
    case retryable(String)
    /// Will not succeed (a rejected prompt, HTTP 4xx, exit code 65, an unusable response).
    case permanent(String)
    /// The backend is over its rate and said when to come back (HTTP 429 with `Retry-After`):
    /// the job waits that long without being charged a retry.
    case rateLimited(String, retryAfter: Duration)

    public var description: String {
        switch self {
        case .retryable(let m), .permanent(let m), .rateLimited(let m, _): return m
        }
    }

    var asJobFailure: JobFailure {
        switch self {
        case .retryable(let m): return .retryable(m)
        case .permanent(let m): return .permanent(m)
        case .rateLimited(let m, let after): return .rateLimited(m, retryAfter: after)
        }
    }
}

/// An image backend.
public protocol ImageGenerator: Sendable {
    /// The name shown in results and logs.
    var name: String { get }
    /// Draws one image. Honours task cancellation (the worker cancels at the job's deadline).
    func generate(_ request: ImageRequest) async throws -> GeneratedImage
    /// Draws one image, reporting `step` of `total` as it goes (rows drawn, sampling steps)
    /// as often as it likes: the worker writes at most one value a second. The default draws
    /// without reporting.
    func generate(_ request: ImageRequest, progress: @escaping @Sendable (_ step: Int, _ total: Int) -> Void) async throws -> GeneratedImage
}

extension ImageGenerator {
    public func generate(_ request: ImageRequest, progress: @escaping @Sendable (_ step: Int, _ total: Int) -> Void) async throws -> GeneratedImage {
        try await generate(request)
    }
}

/// Runs `image.generate` jobs through a generator and stores the PNG with the completion.
public struct ImageJobHandler: JobHandler {
    public let kind = ImageJob.kind
    let generator: any ImageGenerator
    let limits: ImageLimits
    /// Also write `<job id>.png` here.
    let outputDirectory: URL?

    public init(generator: any ImageGenerator, limits: ImageLimits = ImageLimits(), outputDirectory: URL? = nil) {
        self.generator = generator
        self.limits = limits
        self.outputDirectory = outputDirectory
    }

    public func run(_ claimed: ClaimedJob, context: JobContext) async throws -> JobResult {
        let job = claimed.job
        let parameters: ImageJobParameters
        do {
            parameters = try ImageJobParameters(json: job.params)
            try parameters.validate(limits: limits)
        } catch {
            throw JobFailure.permanent("invalid image parameters: \(error)")
        }
        let started = ContinuousClock.now
        let image: GeneratedImage
        do {
            image = try await generator.generate(
                ImageRequest(jobID: job.id, attempt: job.attempt, parameters: parameters, remainingSeconds: claimed.remainingSeconds)
            ) { step, total in context.reportProgress(step: step, of: total) }
        } catch let error as ImageGenerationError {
            throw error.asJobFailure
        }
        let elapsed = ContinuousClock.now - started
        guard PNG.inspect(image.png) != nil else {
            throw JobFailure.permanent("\(generator.name) returned bytes that are not a valid PNG")
        }
        var metadata = image.metadata.mapValues(JSONValue.string)
        metadata["width"] = .number(Double(image.width))
        metadata["height"] = .number(Double(image.height))
        let result = JobResultRecord(
            jobID: job.id, contentType: "image/png", bytes: image.png, backend: image.backend,
            generationMilliseconds: Int(elapsed.milliseconds), metadata: metadata)
        if let outputDirectory {
            let file = outputDirectory.appendingPathComponent("\(job.id.lowercasedString).png")
            try? FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
            try Data(image.png).write(to: file)
        }
        context.logger.info("image generated", metadata: [
            "image.backend": "\(image.backend)", "image.bytes": "\(image.png.count)", "image.ms": "\(elapsed.milliseconds)",
        ])
        return JobResult(store: { conn in try await JobResults.store(result, on: conn) })
    }
}
