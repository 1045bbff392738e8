import ArgumentParser
import Foundation
import ImageJobs
import JobEngine
import Postgres

/// An age or a window on the command line: a number and a unit, `ms`, `s`, `m`, `h`, `d` or
/// `w` (`90s`, `15m`, `1h`, `7d`).
struct Age: ExpressibleByArgument, Sendable, CustomStringConvertible {
    let duration: Duration
    let text: String

    init?(argument: String) {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400), ("w", 604_800)]
        let trimmed = argument.trimmingCharacters(in: .whitespaces).lowercased()
        guard let (unit, seconds) = units.sorted(by: { $0.0.count > $1.0.count }).first(where: { trimmed.hasSuffix($0.0) }),
              let number = Double(trimmed.dropLast(unit.count)), number.isFinite, number > 0, number * seconds <= 10 * 365 * 86400
        else { return nil }
        duration = .milliseconds(Int64((number * seconds * 1000).rounded()))
        text = trimmed
    }

    var description: String { text }
    static var defaultCompletionKind: CompletionKind { .default }
}

extension Age {
    /// The message for a value that is not an age.
    static func invalid(_ option: String, _ value: String) -> String {
        "\(option): \"\(value.prefix(40))\" is not an age; write a number and a unit, e.g. 90s, 15m, 1h, 7d"
    }
}

/// `imagejobs prune`: retention by hand.
struct Prune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete finished jobs (with their images), emptied batches and gone workers older than an age.",
        discussion: """
            Pending and running jobs are never deleted. Runs in pages of --batch rows, each its own short \
            transaction, so claims and submits go on meanwhile. Workers do the same in their sweep \
            (worker --retention).
            """)
    @OptionGroup var database: DatabaseOptions
    @Option(help: ArgumentHelp("Delete what finished longer ago than this (e.g. 7d, 12h).", valueName: "age"))
    var olderThan: String
    @Flag(help: "Count what would be deleted; delete nothing.") var dryRun = false
    @Option(help: "Rows per transaction (1–100000).") var batch = 1000
    @Flag(help: "Print the counts as JSON.") var json = false

    func validate() throws {
        guard Age(argument: olderThan) != nil else { throw ValidationError(Age.invalid("--older-than", olderThan)) }
        guard (1...100_000).contains(batch) else { throw ValidationError("--batch must be 1–100000") }
    }

    func run() async throws {
        try await runCommand {
            let age = Age(argument: olderThan)!
            let pool = try database.pool()
            defer { Task { await pool.close() } }
            let maintenance = Maintenance(pool: pool, logger: database.logger())
            let result = try await maintenance.prune(olderThan: age.duration, batch: batch, dryRun: dryRun)
            if json {
                try printJSON(PruneReport(dryRun: dryRun, olderThan: age.text, result: result))
            } else {
                let verb = dryRun ? "would delete" : "deleted"
                print("\(verb) \(result.jobs) finished jobs older than \(age.text) (\(result.results) images), \(result.batches) batches, \(result.workers) worker records"
                      + (dryRun ? "" : " in \(result.transactions) transactions"))
            }
        }
    }

    struct PruneReport: Encodable {
        let dryRun: Bool
        let olderThan: String
        let result: PruneResult
        enum CodingKeys: String, CodingKey { case dryRun = "dry_run", olderThan = "older_than", result }
    }
}

/// `imagejobs report`: the reporting views as tables, JSON or CSV.
struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the reporting views: queue depth, oldest pending, throughput, latency, failures, retries, conversations, batches, workers.",
        discussion: """
            Reads the report_* views (migration 0006) in one read-only snapshot; the imagejobs_reporter role \
            may run it. Windowed sections cover --since (default 1h). Sections: \(ReportSection.all.map(\.name).joined(separator: ", ")).
            """)
    @OptionGroup var database: DatabaseOptions
    @Argument(help: "Sections to print (default: all).") var sections: [String] = []
    @Option(help: ArgumentHelp("Window of the windowed sections (e.g. 15m, 1h, 7d).", valueName: "age")) var since = "1h"
    @Flag(help: "Print one JSON object.") var json = false
    @Flag(help: "Print CSV (one block per section, blank line between).") var csv = false
    @Flag(help: "Refresh every --interval seconds until interrupted.") var watch = false
    @Option(help: "Seconds between refreshes with --watch.") var interval: Double = 5
    @Option(help: "Most rows per section in tables and CSV (JSON has all).") var limit = 20

    func validate() throws {
        guard Age(argument: since) != nil else { throw ValidationError(Age.invalid("--since", since)) }
        if json && csv { throw ValidationError("--json and --csv exclude each other; choose one") }
        for name in sections where ReportSection.named(name) == nil {
            throw ValidationError("unknown section \"\(name.prefix(40))\"; sections are \(ReportSection.all.map(\.name).joined(separator: ", "))")
        }
        if interval < 0.5 { throw ValidationError("--interval must be at least 0.5 s") }
        if limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
        try await runCommand {
            let window = Age(argument: since)!
            let chosen = sections.isEmpty ? ReportSection.all : sections.compactMap(ReportSection.named)
            let pool = try database.pool(maxConnections: 1)
            defer { Task { await pool.close() } }
            repeat {
                let results = try await ReportSection.read(chosen, window: window.duration, pool: pool)
                let text: String
                if json {
                    text = ReportSection.json(results, window: window)
                } else if csv {
                    text = ReportSection.csv(results)
                } else {
                    text = ReportSection.tables(results, window: window, limit: limit)
                }
                // Written at once (not through print's buffer), so a watching terminal or pipe sees
                // each refresh whole.
                let clear = watch && !json && !csv ? "\u{1B}[H\u{1B}[2J" : ""
                FileHandle.standardOutput.write(Data((clear + text + "\n").utf8))
                if watch { try await Task.sleep(for: .milliseconds(Int64(interval * 1000))) }
            } while watch
        }
    }
}

/// One section of the report: a view and its title.
struct ReportSection: Sendable {
    let name: String
    let view: String
    let title: String
    let windowed: Bool

    static let all: [ReportSection] = [
        .init(name: "depth", view: "report_queue_depth", title: "Queue depth by status and priority", windowed: false),
        .init(name: "oldest", view: "report_oldest_pending", title: "Oldest pending job per priority", windowed: false),
        .init(name: "throughput", view: "report_throughput", title: "Throughput per minute", windowed: true),
        .init(name: "latency", view: "report_latency", title: "Queue wait and run time (s) per priority", windowed: true),
        .init(name: "failures", view: "report_top_failures", title: "Top failure messages", windowed: true),
        .init(name: "retries", view: "report_retries", title: "Jobs with failed attempts", windowed: true),
        .init(name: "conversations", view: "report_conversations", title: "Conversations", windowed: true),
        .init(name: "batches", view: "report_batches", title: "Batches", windowed: true),
        .init(name: "workers", view: "report_workers", title: "Workers", windowed: false),
    ]

    static func named(_ name: String) -> ReportSection? { all.first { $0.name == name.lowercased() } }

    /// Reads every section in one read-only, repeatable-read transaction (one snapshot).
    static func read(_ sections: [ReportSection], window: Duration, pool: PGPool) async throws -> [(ReportSection, PGRows)] {
        Array(zip(sections, try await Reports.read(views: sections.map(\.view), window: window, pool: pool)))
    }

    /// A cell as a JSON value: numbers, booleans, strings, arrays of strings or null.
    static func jsonValue(_ row: PGRow, _ i: Int) -> JSONValue {
        guard let raw = try? row.decode(i, as: String?.self) else { return .null }
        switch row.columns.types[i] {
        case PGType.int2, PGType.int4, PGType.int8, PGType.float4, PGType.float8, PGType.numeric:
            return Double(raw).map(JSONValue.number) ?? .string(raw)
        case PGType.bool:
            return .bool(raw == "t")
        case 1009:
            return .array(((try? row.decode(i, as: [String].self)) ?? []).map(JSONValue.string))
        default:
            return .string(Reports.text(row, i))
        }
    }

    static func tables(_ results: [(ReportSection, PGRows)], window: Age, limit: Int) -> String {
        results.map { section, rows in
            let heading = section.title + (section.windowed ? " (last \(window.text))" : "")
            guard !rows.isEmpty else { return "\(heading)\n  (none)" }
            let body = rows.prefix(limit).map { row in (0..<row.columns.names.count).map { Reports.text(row, $0) } }
            let more = rows.count > limit ? "\n  … \(rows.count - limit) more (--limit, or --json for all)" : ""
            return "\(heading)\n" + table(rows.columns.names, body) + more
        }.joined(separator: "\n\n")
    }

    static func csv(_ results: [(ReportSection, PGRows)]) -> String {
        func field(_ s: String) -> String {
            s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
                ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        return results.map { _, rows in
            ([rows.columns.names.map(field).joined(separator: ",")]
             + rows.map { row in (0..<row.columns.names.count).map { field(Reports.text(row, $0)) }.joined(separator: ",") })
                .joined(separator: "\n")
        }.joined(separator: "\n\n")
    }

    /// `{"window":"1h","window_s":3600,"sections":{"depth":[{…}, …], …}}`, columns in view order.
    static func json(_ results: [(ReportSection, PGRows)], window: Age) -> String {
        var out = "{\"window\":\(JSONValue.string(window.text).jsonText),\"window_s\":\(Double(window.duration.milliseconds) / 1000),\"sections\":{"
        for (n, (section, rows)) in results.enumerated() {
            if n > 0 { out += "," }
            out += "\(JSONValue.string(section.name).jsonText):["
            for (r, row) in rows.enumerated() {
                if r > 0 { out += "," }
                out += "{"
                for (i, name) in row.columns.names.enumerated() {
                    if i > 0 { out += "," }
                    out += "\(JSONValue.string(name).jsonText):\(jsonValue(row, i).jsonText)"
                }
                out += "}"
            }
            out += "]"
        }
        return out + "}}"
    }
}
