import Foundation
import ImageJobs
import JobEngine
import Testing

@Suite("image job parameters")
struct ImageJobParametersTests {
    func error(_ p: ImageJobParameters) -> JobQueueError? {
        do {
            try p.validate()
            return nil
        } catch { return error as? JobQueueError }
    }

    @Test("limits at and past each boundary", arguments: [
        (ImageJobParameters(prompt: String(repeating: "a", count: 4000)), nil),
        (ImageJobParameters(prompt: String(repeating: "a", count: 4001)), "prompt"),
        (ImageJobParameters(prompt: String(repeating: "é", count: 3000) + String(repeating: "字", count: 1000)), nil),
        (ImageJobParameters(prompt: String(repeating: "🎨", count: 4001)), "prompt"),
        (ImageJobParameters(prompt: "a\u{0}b"), "prompt"),
        (ImageJobParameters(prompt: "bell\u{7}"), "prompt"),
        (ImageJobParameters(prompt: " \n\t "), "prompt"),
        (ImageJobParameters(prompt: "ok", width: 64, height: 2048), nil),
        (ImageJobParameters(prompt: "ok", width: 56), "width"),
        (ImageJobParameters(prompt: "ok", width: 2056), "width"),
        (ImageJobParameters(prompt: "ok", width: 0), "width"),
        (ImageJobParameters(prompt: "ok", width: -8), "width"),
        (ImageJobParameters(prompt: "ok", height: 513), "height"),
        (ImageJobParameters(prompt: "ok", steps: 0), "steps"),
        (ImageJobParameters(prompt: "ok", steps: 151), "steps"),
        (ImageJobParameters(prompt: "ok", seed: -1), "seed"),
        (ImageJobParameters(prompt: "ok", seed: 4_294_967_296), "seed"),
        (ImageJobParameters(prompt: "ok", model: "bad model name"), "model"),
        (ImageJobParameters(prompt: "ok", negativePrompt: "a\u{0}"), "negative_prompt"),
    ] as [(ImageJobParameters, String?)])
    func boundaries(parameters: ImageJobParameters, field: String?) {
        let e = error(parameters)
        #expect(e?.field == field)
        if let e {
            #expect(!e.description.contains(String(parameters.prompt.prefix(30))) || parameters.prompt.count < 3)
        }
    }

    @Test("parameters round-trip through the job's JSON object")
    func roundTrip() throws {
        let p = ImageJobParameters(prompt: "'; DROP TABLE jobs;-- \"x\" \\", negativePrompt: "blur", width: 768, height: 512, steps: 20, seed: 7, model: "sdxl-1.0")
        #expect(try ImageJobParameters(json: p.jsonObject) == p)
    }

    @Test("as typed job arguments: enqueued only when valid, stored as the product's params, decoded back with defaults")
    func typedArguments() throws {
        let p = ImageJobParameters(prompt: "a fox", width: 768, seed: 3)
        let spec = try JobSpec(p, groupID: UUID())
        #expect(spec.kind == ImageJob.kind && spec.params == p.jsonObject)
        #expect(try JobArgumentsCoding.arguments(ImageJobParameters.self, from: spec.params) == p)
        #expect(try JobArgumentsCoding.arguments(ImageJobParameters.self, from: ["prompt": "only a prompt"]) == ImageJobParameters(prompt: "only a prompt"))
        let refused = #expect(throws: JobQueueError.self) { try JobSpec(ImageJobParameters(prompt: "x", width: 100), groupID: UUID()) }
        #expect(refused?.field == "width")
    }
}
