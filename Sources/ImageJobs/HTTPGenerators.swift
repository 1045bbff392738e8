import Foundation
import JobEngine

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What the HTTP backends share: one POST of JSON, a deadline from the job, and the same
/// classification of failures (429, 5xx and connection failures retryable; other 4xx permanent).
struct HTTPClient: Sendable {
    let session: URLSession

    init() {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        session = URLSession(configuration: configuration)
    }

    /// GETs a small JSON document, for side reads such as progress: `nil` on any failure
    /// (the job does not depend on it).
    func getJSON(_ url: URL, timeout: Double) async -> JSONValue? {
        var request = URLRequest(url: url)
        request.timeoutInterval = timeout
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        guard let (data, response) = try? await session.data(for: request), (response as? HTTPURLResponse)?.statusCode == 200 else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: data)
    }

    /// POSTs `body` and returns the response body of a 2xx answer.
    func postJSON(_ url: URL, body: [String: JSONValue], headers: [String: String], timeout: Double, backend: String) async throws -> Data {
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        // Past the job's deadline, so the worker's own deadline (a timeout, final) ends a slow
        // request rather than the client (a retryable failure); the client's timer is only a
        // backstop (in CI, with half a second of margin, it was seen to win the race).
        request.timeoutInterval = max(1, timeout) + 2
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        request.httpBody = try JSONEncoder().encode(body)
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.data(for: request)
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as URLError where error.code == .cancelled {
            throw CancellationError()
        } catch let error as URLError where error.code == .timedOut {
            throw ImageGenerationError.retryable("\(backend): no answer from \(url.host ?? "the server") within \(Int(max(1, timeout).rounded())) s")
        } catch {
            throw ImageGenerationError.retryable("\(backend): could not reach \(url.host ?? "the server"): \(Self.describe(error))")
        }
        guard let http = response as? HTTPURLResponse else {
            throw ImageGenerationError.retryable("\(backend): the answer was not HTTP")
        }
        switch http.statusCode {
        case 200..<300:
            return data
        case 429:
            let message = "\(backend): HTTP 429\(Self.reason(data))"
            if let after = Self.retryAfter(http.value(forHTTPHeaderField: "Retry-After")) {
                throw ImageGenerationError.rateLimited(message, retryAfter: after)
            }
            throw ImageGenerationError.retryable(message)
        case 500..<600:
            throw ImageGenerationError.retryable("\(backend): HTTP \(http.statusCode)\(Self.reason(data))")
        default:
            throw ImageGenerationError.permanent("\(backend): HTTP \(http.statusCode)\(Self.reason(data))")
        }
    }

    /// A `Retry-After` value: delay seconds or an HTTP date, at most an hour ahead; `nil` when
    /// absent or unreadable (the answer is then an ordinary retryable failure).
    static func retryAfter(_ value: String?) -> Duration? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        var seconds: Double
        if let n = Double(value), n.isFinite {
            seconds = n
        } else {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
            guard let date = formatter.date(from: value) else { return nil }
            seconds = date.timeIntervalSinceNow
        }
        seconds = min(max(seconds, 0), 3600)
        return .milliseconds(Int64(seconds * 1000))
    }

    static func describe(_ error: any Error) -> String {
        (error as? URLError).map { "URL error \($0.code.rawValue)" } ?? "\(type(of: error))"
    }

    /// A short reason from an error body (`error.message` or `detail`), never the request.
    static func reason(_ data: Data) -> String {
        guard let json = try? JSONDecoder().decode(JSONValue.self, from: data) else { return "" }
        let message = json["error"]?["message"]?.stringValue ?? json["error"]?.stringValue ?? json["detail"]?.stringValue
        return message.map { ": " + String($0.prefix(200)) } ?? ""
    }

    /// Decodes base64 into PNG bytes, or a permanent error naming what was wrong.
    static func png(fromBase64 text: String?, backend: String) throws -> [UInt8] {
        guard let text else { throw ImageGenerationError.permanent("\(backend): the answer has no image") }
        let stripped = text.split(separator: ",", maxSplits: 1).last.map(String.init) ?? text  // data: URLs
        guard let data = Data(base64Encoded: stripped, options: .ignoreUnknownCharacters) else {
            throw ImageGenerationError.permanent("\(backend): the image is not valid base64")
        }
        let bytes = [UInt8](data)
        guard let info = PNG.inspect(bytes) else { throw ImageGenerationError.permanent("\(backend): the image is not a valid PNG") }
        _ = info
        return bytes
    }
}

/// The Stable Diffusion web UI API (`POST /sdapi/v1/txt2img`, base64 images in the answer).
public struct Automatic1111Generator: ImageGenerator {
    public let name = "automatic1111"
    let baseURL: URL
    let client = HTTPClient()

    public init(baseURL: URL) { self.baseURL = baseURL }

    /// Draws while polling `/sdapi/v1/progress` once a second for the sampling step. The server
    /// reports the generation it is running, which is this job's when the server runs one at a
    /// time (as a worker's slot drives it).
    public func generate(_ request: ImageRequest, progress: @escaping @Sendable (_ step: Int, _ total: Int) -> Void) async throws -> GeneratedImage {
        try await withThrowingTaskGroup(of: GeneratedImage?.self) { group in
            group.addTask { try await self.generate(request) }
            group.addTask {
                let url = baseURL.appendingPathComponent("sdapi/v1/progress")
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(1))
                    let state = await client.getJSON(url, timeout: 2)?["state"]
                    if let step = state?["sampling_step"]?.intValue, let total = state?["sampling_steps"]?.intValue, total > 0 {
                        progress(min(step, total), total)
                    }
                }
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let image = result { return image }
            }
            throw CancellationError()
        }
    }

    public func generate(_ request: ImageRequest) async throws -> GeneratedImage {
        let p = request.parameters
        var body: [String: JSONValue] = [
            "prompt": .string(p.prompt), "width": .number(Double(p.width)), "height": .number(Double(p.height)),
            "steps": .number(Double(p.steps)), "seed": .number(Double(p.seed ?? -1)), "batch_size": .number(1),
        ]
        if let n = p.negativePrompt { body["negative_prompt"] = .string(n) }
        if let m = p.model { body["override_settings"] = .object(["sd_model_checkpoint": .string(m)]) }
        let data = try await client.postJSON(
            baseURL.appendingPathComponent("sdapi/v1/txt2img"), body: body, headers: [:], timeout: request.remainingSeconds, backend: name)
        guard let json = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            throw ImageGenerationError.permanent("\(name): the answer is not JSON")
        }
        guard case .array(let images)? = json["images"] else {
            throw ImageGenerationError.permanent("\(name): the answer has no \"images\" array")
        }
        let png = try HTTPClient.png(fromBase64: images.first?.stringValue, backend: name)
        let info = PNG.inspect(png)!
        return GeneratedImage(png: png, width: info.width, height: info.height, backend: name, metadata: p.model.map { ["model": $0] } ?? [:])
    }
}

/// OpenAI-compatible image APIs (`POST /v1/images/generations` with `response_format: b64_json`),
/// which self-hosted servers speak too. The API key comes from the environment and is never
/// logged or put in an error.
public struct OpenAIGenerator: ImageGenerator {
    public let name = "openai"
    let baseURL: URL
    let apiKey: String?
    let defaultModel: String
    let client = HTTPClient()

    public init(baseURL: URL, apiKey: String?, defaultModel: String = "gpt-image-1") {
        self.baseURL = baseURL
        self.apiKey = apiKey
        self.defaultModel = defaultModel
    }

    public func generate(_ request: ImageRequest) async throws -> GeneratedImage {
        let p = request.parameters
        let body: [String: JSONValue] = [
            "model": .string(p.model ?? defaultModel), "prompt": .string(p.prompt), "n": .number(1),
            "size": .string("\(p.width)x\(p.height)"), "response_format": .string("b64_json"),
        ]
        var headers: [String: String] = [:]
        if let apiKey, !apiKey.isEmpty { headers["Authorization"] = "Bearer \(apiKey)" }
        let url = baseURL.path.hasSuffix("/v1") ? baseURL.appendingPathComponent("images/generations")
            : baseURL.appendingPathComponent("v1/images/generations")
        let data = try await client.postJSON(url, body: body, headers: headers, timeout: request.remainingSeconds, backend: name)
        guard let json = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            throw ImageGenerationError.permanent("\(name): the answer is not JSON")
        }
        guard case .array(let items)? = json["data"], let first = items.first else {
            throw ImageGenerationError.permanent("\(name): the answer has no \"data\" array")
        }
        let png = try HTTPClient.png(fromBase64: first["b64_json"]?.stringValue, backend: name)
        let info = PNG.inspect(png)!
        return GeneratedImage(png: png, width: info.width, height: info.height, backend: name, metadata: ["model": p.model ?? defaultModel])
    }
}
