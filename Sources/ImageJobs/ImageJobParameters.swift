import Foundation
import JobEngine

/// Limits on image parameters; every one configurable, the defaults what a real service accepts.
public struct ImageLimits: Sendable, Equatable {
    /// Prompt length in characters. Defaults to 1…4,000.
    public var promptLength: ClosedRange<Int> = 1...4000
    /// Prompt size in UTF-8 bytes. Defaults to at most 16,000.
    public var maxPromptBytes = 16_000
    /// Width and height in pixels, in steps of ``sizeStep``. Defaults to 64…2,048.
    public var sizeRange: ClosedRange<Int> = 64...2048
    /// Width and height must be multiples of this. Defaults to 8.
    public var sizeStep = 8
    /// Most pixels of one image (width × height). Defaults to 2048 × 2048.
    public var maxPixels = 2048 * 2048
    /// Sampling steps. Defaults to 1…150.
    public var stepsRange: ClosedRange<Int> = 1...150
    /// Seeds. Defaults to 0…2³²−1.
    public var seedRange: ClosedRange<Int64> = 0...4_294_967_295
    /// Model name length. Defaults to 1…100.
    public var modelLength: ClosedRange<Int> = 1...100

    public init() {}
}

/// What one image job asks for: the image product's typed job arguments, stored as the job's
/// `params`. Enqueued as typed arguments (`JobSpec(parameters, groupID:)`) or through
/// ``ImageJob``, they are validated first.
public struct ImageJobParameters: JobArguments, Equatable {
    public static let kind = "image.generate"

    public var prompt: String
    public var negativePrompt: String?
    public var width: Int
    public var height: Int
    public var steps: Int
    public var seed: Int64?
    public var model: String?

    public init(prompt: String, negativePrompt: String? = nil, width: Int = 512, height: Int = 512, steps: Int = 30,
                seed: Int64? = nil, model: String? = nil) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.width = width
        self.height = height
        self.steps = steps
        self.seed = seed
        self.model = model
    }

    enum CodingKeys: String, CodingKey {
        case prompt, width, height, steps, seed, model
        case negativePrompt = "negative_prompt"
    }

    /// Checks every field against the default limits.
    public func validate() throws {
        try validate(limits: ImageLimits())
    }

    /// Checks every field; the error names the field (and the batch item, with `index`) and
    /// what is allowed, never the prompt.
    public func validate(limits: ImageLimits, index: Int? = nil) throws {
        func fail(_ field: String, _ message: String) -> JobQueueError {
            JobQueueError(.invalidInput, message, field: field, index: index)
        }
        try Self.checkText(prompt, field: "prompt", limits: limits, required: true, index: index)
        if let negativePrompt { try Self.checkText(negativePrompt, field: "negative_prompt", limits: limits, required: false, index: index) }
        for (field, value) in [("width", width), ("height", height)] {
            if !limits.sizeRange.contains(value) || value % limits.sizeStep != 0 {
                throw fail(field, "\(field) must be \(limits.sizeRange.lowerBound)–\(limits.sizeRange.upperBound) in steps of \(limits.sizeStep), got \(value)")
            }
        }
        if width * height > limits.maxPixels {
            throw fail("width", "width × height must be at most \(limits.maxPixels) pixels, got \(width * height)")
        }
        if !limits.stepsRange.contains(steps) {
            throw fail("steps", "steps must be \(limits.stepsRange.lowerBound)–\(limits.stepsRange.upperBound), got \(steps)")
        }
        if let seed, !limits.seedRange.contains(seed) {
            throw fail("seed", "seed must be \(limits.seedRange.lowerBound)–\(limits.seedRange.upperBound), got \(seed)")
        }
        if let model {
            let u = Array(model.utf8)
            func ok(_ c: UInt8) -> Bool { (65...90).contains(c) || (97...122).contains(c) || (48...57).contains(c) }
            if !limits.modelLength.contains(u.count) || u.isEmpty || !ok(u[0])
                || !u.allSatisfy({ ok($0) || $0 == 46 || $0 == 95 || $0 == 58 || $0 == 47 || $0 == 45 }) {
                throw fail("model", "model must be 1–\(limits.modelLength.upperBound) characters of letters, digits and . _ : / -")
            }
        }
    }

    static func checkText(_ text: String, field: String, limits: ImageLimits, required: Bool, index: Int?) throws {
        func fail(_ message: String) -> JobQueueError { JobQueueError(.invalidInput, message, field: field, index: index) }
        if required && text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw fail("\(field) must not be empty")
        }
        // Characters are Unicode code points, as PostgreSQL counts them in submit_job.
        let characters = text.unicodeScalars.count
        if characters > limits.promptLength.upperBound {
            throw fail("\(field) must be at most \(limits.promptLength.upperBound) characters, got \(characters)")
        }
        if text.utf8.count > limits.maxPromptBytes {
            throw fail("\(field) must be at most \(limits.maxPromptBytes) bytes of UTF-8, got \(text.utf8.count)")
        }
        if text.unicodeScalars.contains(where: { $0.value == 0 }) {
            throw fail("\(field) must not contain NUL characters")
        }
        if text.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\n" && $0 != "\t" && $0 != "\r") || $0.value == 0x7f }) {
            throw fail("\(field) must not contain control characters other than tab and newline")
        }
    }

    /// The parameters as a job's JSON object.
    public var jsonObject: [String: JSONValue] {
        var o: [String: JSONValue] = [
            "prompt": .string(prompt), "width": .number(Double(width)), "height": .number(Double(height)),
            "steps": .number(Double(steps)),
        ]
        if let negativePrompt { o["negative_prompt"] = .string(negativePrompt) }
        if let seed { o["seed"] = .number(Double(seed)) }
        if let model { o["model"] = .string(model) }
        return o
    }

    /// Decodes as ``init(json:)`` reads: sizes and steps default when absent.
    public init(from decoder: any Decoder) throws {
        guard case .object(let object) = try JSONValue(from: decoder) else {
            throw JobQueueError(.invalidInput, "image parameters must be a JSON object", field: "params")
        }
        try self.init(json: object)
    }

    /// Reads parameters back from a job's JSON object.
    public init(json: [String: JSONValue]) throws {
        guard let prompt = json["prompt"]?.stringValue else {
            throw JobQueueError(.invalidInput, "prompt is missing or not a string", field: "prompt")
        }
        func int(_ key: String, _ fallback: Int) throws -> Int {
            guard let value = json[key] else { return fallback }
            guard let i = value.intValue else { throw JobQueueError(.invalidInput, "\(key) must be an integer", field: key) }
            return i
        }
        self.prompt = prompt
        self.negativePrompt = json["negative_prompt"]?.stringValue
        self.width = try int("width", 512)
        self.height = try int("height", 512)
        self.steps = try int("steps", 30)
        self.seed = try json["seed"].map { v in
            guard let i = v.intValue else { throw JobQueueError(.invalidInput, "seed must be an integer", field: "seed") }
            return Int64(i)
        }
        self.model = json["model"]?.stringValue
    }
}
