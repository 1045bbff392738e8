import Foundation
import Testing
@testable import JobEngine
import Postgres

/// The engine knows jobs, kinds, groups, batches, attempts and results; the image product's
/// words belong to the layer above it.
@Suite("layering")
struct LayeringTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Every Swift file under `folder`, with its text.
    func sources(_ folder: String) throws -> [(path: String, text: String)] {
        let base = Self.root.appendingPathComponent(folder)
        let files = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil)!.compactMap { $0 as? URL }
        return try files.filter { $0.pathExtension == "swift" }.map { ($0.path.replacingOccurrences(of: Self.root.path + "/", with: ""), try String(contentsOf: $0, encoding: .utf8)) }
    }

    @Test("no image or chat word in the engine's module (its embedded migrations aside: the schema's history)")
    func engineSpeaksOfJobsOnly() throws {
        let words = try NSRegularExpression(pattern: #"\b(image|images|conversation|conversations|prompt|prompts|png)\b"#, options: .caseInsensitive)
        var found: [String] = []
        let files = try sources("Sources/JobEngine").filter { !$0.path.contains("/Generated/") }
        #expect(files.count > 10)
        for (path, text) in files {
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let l = String(line)
                if words.firstMatch(in: l, range: NSRange(l.startIndex..., in: l)) != nil { found.append("\(path):\(n + 1): \(l.trimmingCharacters(in: .whitespaces))") }
            }
        }
        #expect(found.isEmpty, "\(found.joined(separator: "\n"))")
    }

    @Test("each layer imports only the layers below it: Postgres → JobEngine → ImageJobs → ImageJobsServer → ImageJobsCLI")
    func importsPointDown() throws {
        let layers = ["Postgres", "JobEngine", "ImageJobs", "ImageJobsServer", "ImageJobsCLI"]
        var wrong: [String] = []
        for (i, layer) in layers.enumerated() {
            let above = Set(layers[(i + 1)...])
            for (path, text) in try sources("Sources/\(layer)") {
                for line in text.split(separator: "\n") where line.hasPrefix("import ") {
                    let module = line.dropFirst("import ".count).trimmingCharacters(in: .whitespaces)
                    if above.contains(module) { wrong.append("\(path) imports \(module)") }
                }
            }
        }
        #expect(wrong.isEmpty, "\(wrong)")
    }
}

@Suite("statement names")
struct StatementNameTests {
    @Test("a statement is named after the function that writes it, in every catalog")
    func namesFollowFunctions() {
        #expect(JobSQL.complete(ids: [], attempts: []).name == "JobSQL.complete")
        #expect(JobSQL.claim(workerID: "w", kinds: [], limit: 1).name == "JobSQL.completeAndClaim")
        #expect(MaintenanceSQL.prune(olderThan: .seconds(1), limit: 1, dryRun: true).name == "MaintenanceSQL.prune")
        #expect(ResultSQL.bytes(jobID: UUID()).name == "ResultSQL.bytes")
        #expect(MigratorSQL.lock().name == "MigratorSQL.lock")
        #expect(ReportSQL.view("report_workers").name == "ReportSQL.view")
    }
}
