import Foundation
import ImageJobs
import JobEngine
import TestSupport
import Testing

func request(_ p: ImageJobParameters, remaining: Double = 30) -> ImageRequest {
    ImageRequest(jobID: UUID(), attempt: 1, parameters: p, remainingSeconds: remaining)
}

/// A small valid PNG for fake servers to return.
func samplePNG(width: Int = 64, height: Int = 48) throws -> [UInt8] {
    try PNG.encodeRGB(width: width, height: height, pixels: [UInt8](repeating: 200, count: width * height * 3))
}

@Suite("image generators")
struct GeneratorTests {
    @Test("the procedural PNG is valid: signature, IHDR size, CRCs, IDAT inflates to the right size")
    func proceduralIsValidPNG() async throws {
        let image = try await ProceduralGenerator().generate(request(ImageJobParameters(prompt: "a lighthouse", width: 320, height: 200, seed: 9)))
        #expect(Array(image.png.prefix(8)) == PNG.signature)
        let info = try #require(PNG.inspect(image.png))
        #expect(info.width == 320 && info.height == 200)
        #expect(info.bitDepth == 8 && info.colorType == 2)
        #expect(info.inflatedSize == (320 * 3 + 1) * 200)
        // A flipped byte breaks a CRC.
        var broken = image.png
        broken[40] ^= 0xff
        #expect(PNG.inspect(broken) == nil)
    }

    final class Reports: @unchecked Sendable {
        let lock = NSLock()
        var values: [(Int, Int)] = []
        func add(_ step: Int, _ total: Int) { lock.lock(); values.append((step, total)); lock.unlock() }
    }

    @Test("the procedural generator reports its rows as progress, rising to all of them")
    func proceduralReportsRows() async throws {
        let reports = Reports()
        _ = try await ProceduralGenerator().generate(request(ImageJobParameters(prompt: "a kite", width: 64, height: 200))) {
            reports.add($0, $1)
        }
        let steps = reports.values.map(\.0)
        #expect(steps.count > 2)
        #expect(steps == steps.sorted())
        #expect(reports.values.allSatisfy { $0.1 == 200 })
        #expect(steps.last == 200)
    }

    @Test("the same job renders the same bytes; different prompts and seeds differ")
    func proceduralIsDeterministic() async throws {
        let g = ProceduralGenerator()
        let a = try await g.generate(request(ImageJobParameters(prompt: "a red fox", width: 128, height: 128, seed: 1)))
        let b = try await g.generate(request(ImageJobParameters(prompt: "a red fox", width: 128, height: 128, seed: 1)))
        let c = try await g.generate(request(ImageJobParameters(prompt: "a blue whale", width: 128, height: 128, seed: 1)))
        let d = try await g.generate(request(ImageJobParameters(prompt: "a red fox", width: 128, height: 128, seed: 2)))
        #expect(a.png == b.png)
        #expect(a.png != c.png)
        #expect(a.png != d.png)
    }

    @Test("automatic1111: success, 429 then success, 400 permanent, malformed body, slow server")
    func automatic1111() async throws {
        let png = try samplePNG()
        let ok = TestHTTPServer.Response.json(200, #"{"images":["\#(Data(png).base64EncodedString())"]}"#)
        let server = try TestHTTPServer([.json(429, #"{"detail":"busy"}"#), ok])
        defer { server.stop() }
        let g = Automatic1111Generator(baseURL: server.url)
        let p = ImageJobParameters(prompt: "x", negativePrompt: "blur", width: 64, height: 48, steps: 12, seed: 5)
        let first = await #expect(throws: ImageGenerationError.self) { try await g.generate(request(p)) }
        #expect(first == .retryable("automatic1111: HTTP 429: busy"))
        let image = try await g.generate(request(p))
        #expect(image.png == png && image.width == 64 && image.height == 48)
        let sent = try JSONDecoder().decode(JSONValue.self, from: Data(server.received[1].body))
        #expect(server.received[1].path == "/sdapi/v1/txt2img")
        #expect(sent["prompt"] == .string("x") && sent["negative_prompt"] == .string("blur") && sent["steps"] == .number(12))

        let rejecting = try TestHTTPServer([.json(400, #"{"detail":"prompt rejected"}"#)])
        defer { rejecting.stop() }
        let rejected = await #expect(throws: ImageGenerationError.self) { try await Automatic1111Generator(baseURL: rejecting.url).generate(request(p)) }
        #expect(rejected == .permanent("automatic1111: HTTP 400: prompt rejected"))

        let malformed = try TestHTTPServer([.json(200, #"{"images":["not base64 !!"]}"#), .json(200, "<html>")])
        defer { malformed.stop() }
        let m = Automatic1111Generator(baseURL: malformed.url)
        let e1 = await #expect(throws: ImageGenerationError.self) { try await m.generate(request(p)) }
        #expect(e1?.description.contains("automatic1111") == true)
        let e2 = await #expect(throws: ImageGenerationError.self) { try await m.generate(request(p)) }
        #expect(e2 == .permanent("automatic1111: the answer is not JSON"))

        let slow = try TestHTTPServer([.json(200, "{}", delay: 5)])
        defer { slow.stop() }
        let start = ContinuousClock.now
        let timedOut = await #expect(throws: ImageGenerationError.self) { try await Automatic1111Generator(baseURL: slow.url).generate(request(p, remaining: 1)) }
        #expect(timedOut?.description.contains("within 1 s") == true)
        #expect(ContinuousClock.now - start < .seconds(4))
    }

    @Test("openai: success, 5xx and 429 retryable (429 with Retry-After deferred), 400 permanent, malformed body, slow server; the key sent as a bearer token and never in errors")
    func openAI() async throws {
        let png = try samplePNG()
        let key = "sk-canary-\(UUID().uuidString.prefix(8))"
        let ok = TestHTTPServer.Response.json(200, #"{"data":[{"b64_json":"\#(Data(png).base64EncodedString())"}]}"#)
        let server = try TestHTTPServer([.json(503, #"{"error":{"message":"overloaded"}}"#), ok,
                                         .json(400, #"{"error":{"message":"Your request was rejected by the safety system"}}"#),
                                         .json(429, #"{"error":{"message":"Rate limit reached"}}"#),
                                         .json(429, #"{"error":{"message":"Rate limit reached"}}"#, headers: ["Retry-After: 7"]), ok])
        defer { server.stop() }
        let g = OpenAIGenerator(baseURL: server.url, apiKey: key)
        let p = ImageJobParameters(prompt: "a fox", width: 64, height: 48, model: "dall-e-3")
        let e1 = await #expect(throws: ImageGenerationError.self) { try await g.generate(request(p)) }
        #expect(e1 == .retryable("openai: HTTP 503: overloaded"))
        let image = try await g.generate(request(p))
        #expect(image.png == png)
        #expect(server.received[1].path == "/v1/images/generations")
        #expect(server.received[1].headers["authorization"] == "Bearer \(key)")
        let sent = try JSONDecoder().decode(JSONValue.self, from: Data(server.received[1].body))
        #expect(sent["response_format"] == .string("b64_json") && sent["size"] == .string("64x48") && sent["model"] == .string("dall-e-3"))
        let e3 = await #expect(throws: ImageGenerationError.self) { try await g.generate(request(p)) }
        #expect(e3 == .permanent("openai: HTTP 400: Your request was rejected by the safety system"))
        let e4 = await #expect(throws: ImageGenerationError.self) { try await g.generate(request(p)) }
        #expect(e4 == .retryable("openai: HTTP 429: Rate limit reached"))
        // With Retry-After the job waits that long, no retry charged.
        let e429 = await #expect(throws: ImageGenerationError.self) { try await g.generate(request(p)) }
        #expect(e429 == .rateLimited("openai: HTTP 429: Rate limit reached", retryAfter: .seconds(7)))
        #expect(try await g.generate(request(p)).png == png)
        for e in [e1, e3, e4] { #expect(!(e?.description.contains(key) ?? true)) }

        let malformed = try TestHTTPServer([.json(200, #"{"data":[{"b64_json":"not base64 !!"}]}"#),
                                            .json(200, #"{"data":[]}"#), .json(200, "<html>")])
        defer { malformed.stop() }
        let m = OpenAIGenerator(baseURL: malformed.url, apiKey: key)
        // Garbage where the base64 PNG should be, no image at all, and no JSON: each a permanent error saying which.
        for expected in ["openai: the image is not", "openai: the answer has no \"data\" array", "openai: the answer is not JSON"] {
            let e = await #expect(throws: ImageGenerationError.self) { try await m.generate(request(p)) }
            if case .permanent(let message)? = e { #expect(message.hasPrefix(expected), "\(message)") } else { Issue.record("expected permanent, got \(String(describing: e))") }
        }

        let slow = try TestHTTPServer([.json(200, "{}", delay: 5)])
        defer { slow.stop() }
        let start = ContinuousClock.now
        let timedOut = await #expect(throws: ImageGenerationError.self) { try await OpenAIGenerator(baseURL: slow.url, apiKey: key).generate(request(p, remaining: 1)) }
        #expect(timedOut?.description.contains("within 1 s") == true)
        #expect(ContinuousClock.now - start < .seconds(4))
    }

    @Test("a refused connection is retryable")
    func connectionRefused() async throws {
        let e = await #expect(throws: ImageGenerationError.self) {
            try await OpenAIGenerator(baseURL: URL(string: "http://127.0.0.1:1")!, apiKey: nil).generate(request(ImageJobParameters(prompt: "x")))
        }
        if case .retryable = e {} else { Issue.record("expected retryable, got \(String(describing: e))") }
    }

    @Test("command: progress lines on stderr are reported and left out of the error's tail; other lines are kept")
    func commandProgress() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cmdprogress-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pngFile = dir.appendingPathComponent("out.png")
        try Data(try samplePNG()).write(to: pngFile)
        let p = ImageJobParameters(prompt: "a fox", width: 64, height: 48)

        let reports = Reports()
        let drawing = try CommandGenerator(
            commandLine: "sh -c 'cat >/dev/null; echo progress 1/4 >&2; echo loading weights >&2; echo progress 3/4 >&2; echo progress x/4 >&2; cat \(pngFile.path)'")
        _ = try await drawing.generate(request(p)) { reports.add($0, $1) }
        #expect(reports.values.map { [$0.0, $0.1] } == [[1, 4], [3, 4]])

        let failing = try CommandGenerator(commandLine: "sh -c 'echo progress 2/5 >&2; echo out of memory >&2; exit 2'")
        let error = await #expect(throws: ImageGenerationError.self) { try await failing.generate(request(p)) { _, _ in } }
        #expect(error == .retryable("command: exit 2: out of memory"))
        #expect(CommandGenerator.progressLine(Array("progress 0/1".utf8))! == (0, 1))
        for line in ["progress 3/0", "progress -1/4", "progress 1", "progress: 1/4", "progressing 1/4"] {
            #expect(CommandGenerator.progressLine(Array(line.utf8)) == nil, "\(line)")
        }
    }

    @Test("automatic1111: the sampling step from /sdapi/v1/progress is reported while the image is drawn")
    func automatic1111Progress() async throws {
        let png = try samplePNG()
        let server = try TestHTTPServer([
            .json(200, #"{"images":["\#(Data(png).base64EncodedString())"]}"#, delay: 3.5),
            .json(200, #"{"progress":0.25,"state":{"sampling_step":5,"sampling_steps":20}}"#),
            .json(200, #"{"progress":0.6,"state":{"sampling_step":12,"sampling_steps":20}}"#),
        ])
        defer { server.stop() }
        let reports = Reports()
        let image = try await Automatic1111Generator(baseURL: server.url).generate(request(ImageJobParameters(prompt: "a fox", width: 64, height: 48))) {
            reports.add($0, $1)
        }
        #expect(image.width == 64)
        #expect(server.received.contains { $0.path.hasPrefix("/sdapi/v1/progress") })
        #expect(!reports.values.isEmpty && reports.values.allSatisfy { [5, 12].contains($0.0) && $0.1 == 20 }, "\(reports.values)")
    }

    @Test("command: success, non-zero exit, exit 65, garbage output, and a hang killed at the deadline")
    func command() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cmdgen-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pngFile = dir.appendingPathComponent("out.png")
        try Data(try samplePNG()).write(to: pngFile)
        let stdinCopy = dir.appendingPathComponent("stdin.json")
        let p = ImageJobParameters(prompt: "a fox", width: 64, height: 48)

        let ok = try CommandGenerator(commandLine: "sh -c 'cat > \(stdinCopy.path); cat \(pngFile.path)'")
        let image = try await ok.generate(request(p))
        #expect(image.width == 64 && image.height == 48)
        let input = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: stdinCopy))
        #expect(input["prompt"] == .string("a fox") && input["attempt"] == .number(1) && input["job_id"]?.stringValue != nil)

        let failing = try CommandGenerator(commandLine: "sh -c 'echo out of memory >&2; exit 2'")
        let e1 = await #expect(throws: ImageGenerationError.self) { try await failing.generate(request(p)) }
        #expect(e1 == .retryable("command: exit 2: out of memory"))
        let permanent = try CommandGenerator(commandLine: "sh -c 'echo prompt refused >&2; exit 65'")
        let e2 = await #expect(throws: ImageGenerationError.self) { try await permanent.generate(request(p)) }
        #expect(e2 == .permanent("command: exit 65: prompt refused"))
        let garbage = try CommandGenerator(commandLine: "echo hello")
        let e3 = await #expect(throws: ImageGenerationError.self) { try await garbage.generate(request(p)) }
        if case .permanent(let m)? = e3 { #expect(m.contains("not a valid PNG")) } else { Issue.record("expected permanent, got \(String(describing: e3))") }

        // The hang starts a child of its own; both must be gone after the deadline. A program
        // that exits leaves nothing behind either. Each sleep's odd length marks it in `ps`.
        let hangMarker = "3\(Int.random(in: 100_000...999_999))"
        let hang = try CommandGenerator(commandLine: "sh -c 'sleep \(hangMarker) & exec sleep \(hangMarker)'")
        let start = ContinuousClock.now
        let e4 = await #expect(throws: ImageGenerationError.self) { try await hang.generate(request(p, remaining: 1)) }
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(e4?.description.contains("killed") == true, "\(String(describing: e4))")
        #expect(try processes(named: "sleep \(hangMarker)") == 0)

        let leftoverMarker = "3\(Int.random(in: 100_000...999_999))"
        let leaving = try CommandGenerator(commandLine: "sh -c 'sleep \(leftoverMarker) & cat \(pngFile.path)'")
        #expect(try await leaving.generate(request(p)).width == 64)
        #expect(try processes(named: "sleep \(leftoverMarker)") == 0)
    }

    @Test("command: programs that exit at once, eight at a time, each keep their own exit status")
    func commandExitsKeepTheirStatus() async throws {
        let garbage = try CommandGenerator(commandLine: "echo hello")
        let p = ImageJobParameters(prompt: "a fox", width: 64, height: 48)
        var unexpected: [String] = []
        for _ in 0..<20 {
            unexpected += await withTaskGroup(of: String?.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        do {
                            _ = try await garbage.generate(request(p))
                            return "no error"
                        } catch ImageGenerationError.permanent(let message) where message.contains("not a valid PNG") {
                            return nil
                        } catch {
                            return "\(error)"
                        }
                    }
                }
                return await group.reduce(into: []) { if let outcome = $1 { $0.append(outcome) } }
            }
        }
        #expect(unexpected.isEmpty, "\(unexpected.count) of 160 runs: \(unexpected.prefix(3))")
    }

    /// How many processes run with exactly this command line.
    func processes(named commandLine: String) throws -> Int {
        let ps = Process()
        ps.executableURL = URL(fileURLWithPath: "/bin/ps")
        ps.arguments = ["-eo", "args="]
        let pipe = Pipe()
        ps.standardOutput = pipe
        try ps.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        ps.waitUntilExit()
        return String(decoding: output, as: UTF8.self).split(separator: "\n").filter { $0 == commandLine }.count
    }

    @Test("command lines split like a shell's words and quotes")
    func splitting() throws {
        let g = try CommandGenerator(commandLine: #"python3 -u "my script.py" --x 'a b' c\ d"#)
        #expect(g.arguments == ["python3", "-u", "my script.py", "--x", "a b", "c d"])
        #expect(throws: ImageGenerationError.self) { try CommandGenerator(commandLine: "a 'b") }
    }
}
