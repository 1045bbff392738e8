import ArgumentParser
import Foundation
import ImageJobs
import JobEngine
import Postgres

extension ImageJobsCommand {
    struct Submit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Submit one image job, or a batch from a file (JSON array or JSON lines).")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "The conversation the job belongs to (UUID).") var conversation: String?
        @Option(help: "What to draw (1–4,000 characters).") var prompt: String?
        @Option(help: "What to avoid.") var negativePrompt: String?
        @Option(help: "high, normal or low.") var priority: String = "normal"
        @Option(help: "Pixels, 64–2,048 in steps of 8.") var width: Int = 512
        @Option(help: "Pixels, 64–2,048 in steps of 8.") var height: Int = 512
        @Option(help: "Random seed (0–4294967295).") var seed: Int64?
        @Option(help: "Sampling steps (1–150).") var steps: Int = 30
        @Option(help: "Model name for the generator.") var model: String?
        @Option(help: "Seconds one attempt may run (1–86,400).") var timeout: Double = 300
        @Option(help: "Retries after a failed attempt (0–25).") var maxRetries: Int = 3
        @Option(help: "A key that makes a retried submit return the first job.") var idempotencyKey: String?
        @Option(help: "A batch file, or - for standard input.") var batch: String?
        @Option(help: "Start no sooner than this long from now: 30s, 5m, 2h or 1d.") var delay: String?
        @Option(help: "Start no sooner than this time (ISO 8601 with a zone, e.g. 2026-12-24T18:00:00Z).") var runAt: String?
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            if batch != nil && (prompt != nil || conversation != nil) {
                throw ValidationError("use either --batch FILE or --conversation/--prompt, not both")
            }
            if batch == nil && (prompt == nil || conversation == nil) {
                throw ValidationError("--conversation and --prompt are required (or give --batch FILE)")
            }
            if delay != nil && runAt != nil { throw ValidationError("use either --delay or --run-at, not both") }
            if batch != nil && (delay != nil || runAt != nil) {
                throw ValidationError("a batch file gives each item's start time as \"run_at\"; --delay and --run-at are for one job")
            }
        }

        /// The start time --delay or --run-at asks for.
        func startTime() throws -> Date? {
            if let runAt { return try ImageJob.runAt(runAt) }
            guard let delay else { return nil }
            guard let age = Age(argument: delay) else { throw CLIError.badInput(Age.invalid("--delay", delay)) }
            return Date(timeIntervalSinceNow: Double(age.duration.milliseconds) / 1000)
        }

        func run() async throws {
            try await runCommand {
                if let batch {
                    let (specs, conversationID) = try ImageJob.batch(items: try BatchFile.parse(try BatchFile.read(batch)))
                    let queue = try database.queue()
                    let submitted = try await queue.submitBatch(specs, groupID: conversationID)
                    if json { return try printJSON(submitted) }
                    print("batch \(submitted.batchID.lowercasedString): \(submitted.jobIDs.count) jobs submitted")
                    return
                }
                let spec = try ImageJob.spec(
                    conversationID: try parseUUID(conversation ?? "", field: "conversation"),
                    parameters: ImageJobParameters(
                        prompt: prompt ?? "", negativePrompt: negativePrompt, width: width, height: height, steps: steps, seed: seed,
                        model: model),
                    priority: try ImageJob.priority(priority), timeout: timeout, maxRetries: maxRetries, idempotencyKey: idempotencyKey,
                    runAt: try startTime())
                let queue = try database.queue()
                let (job, created) = try await queue.submit(spec)
                if json { return try printJSON(job) }
                print("\(created ? "submitted" : "already submitted (same idempotency key)") \(job.id.lowercasedString) [\(job.priority.rawValue)]")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one job.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The job's id.") var id: String
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await runCommand {
                let queue = try database.queue()
                let job = try await queue.job(try parseUUID(id, field: "id"))
                let result = try await JobResults.info(job.id, pool: queue.pool)
                if json { return try printJSON(JobWithResult(job: job, result: result)) }
                var rows: [[String]] = [
                    ["id", job.id.lowercasedString], ["status", job.status.rawValue], ["priority", job.priority.rawValue],
                    ["kind", job.kind], ["conversation", job.groupID.lowercasedString],
                    ["batch", job.batchID?.lowercasedString ?? "-"],
                    ["retry_count", "\(job.retryCount) of \(job.maxRetries)"], ["attempt", "\(job.attempt)"],
                    ["timeout", "\(Int(job.timeout.seconds)) s"], ["created_at", ISO8601.format(job.createdAt)],
                    ["next_attempt_at", ISO8601.format(job.nextAttemptAt)],
                ]
                if let d = job.startedAt { rows.append(["started_at", ISO8601.format(d)]) }
                if let d = job.finishedAt { rows.append(["finished_at", ISO8601.format(d)]) }
                if let w = job.workerID { rows.append(["worker_id", w]) }
                if let e = job.errorMessage { rows.append(["error_message", e]) }
                if let r = result {
                    let size = (r.metadata["width"]?.intValue).flatMap { w in (r.metadata["height"]?.intValue).map { "\(w)×\($0) " } } ?? ""
                    rows.append(["result", "\(size)\(r.contentType), \(r.byteSize) bytes, \(r.backend), \(r.generationMilliseconds) ms"])
                    rows.append(["result_sha256", r.sha256])
                }
                print(table(["field", "value"], rows))
            }
        }
    }

    struct Position: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a pending job's place in the queue and its ETA.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The job's id.") var id: String
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await runCommand {
                let p = try await database.queue().position(try parseUUID(id, field: "id"))
                if json { return try printJSON(p) }
                let eta = p.etaSeconds.map { String(format: "%.0f s", $0) } ?? "unknown"
                if let wait = p.waiting {
                    let until = wait.until.map { " until \(ISO8601.format($0))" } ?? ""
                    let place = p.position.map { "position \($0), " } ?? ""
                    return print("waiting: \(Self.describe(wait.reason))\(until); \(place)eta \(eta)")
                }
                guard let position = p.position else {
                    print("job \(p.id.lowercasedString) is \(p.status.rawValue), not waiting in the queue")
                    return
                }
                print("position \(position) (\(p.aheadHigherPriority ?? 0) ahead with higher priority), eta \(p.etaSeconds == nil ? "unknown (no recent completions)" : eta)")
            }
        }
    
        static func describe(_ reason: JobWait.Reason) -> String {
            switch reason {
            case .paused: "its kind is paused"
            case .scheduled: "scheduled"
            case .retryBackoff: "retry backoff"
            case .groupCap: "its conversation runs as many jobs as its cap allows"
            case .rateLimit: "its kind's rate limit"
            case .admitting: "being admitted"
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List jobs, newest first.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Only this conversation.") var conversation: String?
        @Option(help: "Only this batch.") var batch: String?
        @Option(help: "pending, running, completed, error or cancelled.") var status: String?
        @Option(help: "At most this many (1–10,000).") var limit: Int = 50
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await runCommand {
                let statusValue: JobStatus? = try status.map {
                    guard let s = JobStatus(rawValue: $0) else {
                        throw CLIError.badInput("status must be pending, running, completed, error or cancelled")
                    }
                    return s
                }
                let jobs = try await database.queue().list(
                    groupID: try conversation.map { try parseUUID($0, field: "conversation") },
                    batchID: try batch.map { try parseUUID($0, field: "batch") }, status: statusValue, limit: limit)
                if json { return try printJSON(jobs) }
                print(table(["id", "status", "priority", "retries", "created_at"], jobs.map {
                    [$0.id.lowercasedString, $0.status.rawValue, $0.priority.rawValue, "\($0.retryCount)", ISO8601.format($0.createdAt)]
                }))
            }
        }
    }

    struct Batch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a batch's progress (jobs per status).")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The batch's id.") var id: String
        @Flag(help: "Wait until the batch's last job finishes, then show it.") var wait = false
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await runCommand {
                let queue = try database.queue()
                let batchID = try parseUUID(id, field: "id")
                let b = try await wait ? queue.waitForBatch(batchID) : queue.batch(batchID)
                if json { return try printJSON(b) }
                let finished = b.finishedAt.map { ", finished \(ISO8601.format($0))" } ?? ""
                print("batch \(b.batchID.lowercasedString): \(b.total) jobs\(finished)")
                print(table(["status", "jobs"], JobStatus.allCases.map { [$0.rawValue, "\(b.counts[$0, default: 0])"] }))
            }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a pending or running job, or every job of a batch.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The job's id.") var id: String?
        @Option(help: "Cancel this batch's jobs.") var batch: String?

        func validate() throws {
            if (id == nil) == (batch == nil) { throw ValidationError("give a job id or --batch UUID") }
        }

        func run() async throws {
            try await runCommand {
                let queue = try database.queue()
                if let batch {
                    let n = try await queue.cancelBatch(try parseUUID(batch, field: "batch"))
                    print("cancelled \(n) jobs")
                } else if let id {
                    let was = try await queue.cancel(try parseUUID(id, field: "id"))
                    print("cancelled (was \(was.rawValue))")
                }
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-queue a job in error with a fresh retry budget.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The job's id.") var id: String

        func run() async throws {
            try await runCommand {
                try await database.queue().retry(try parseUUID(id, field: "id"))
                print("re-queued")
            }
        }
    }
}

/// Batch files: a JSON array of objects, or one object per line.
enum BatchFile {
    static func read(_ path: String) throws -> Data {
        if path == "-" { return FileHandle.standardInput.readDataToEndOfFile() }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CLIError.badInput("cannot read batch file \(path)")
        }
        return data
    }

    /// The file's items, each a JSON value, in order.
    static func parse(_ data: Data) throws -> [JSONValue] {
        guard let text = String(data: data, encoding: .utf8) else {
            throw CLIError.badInput("the batch file is not valid UTF-8")
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { throw JobQueueError(.invalidInput, "the batch file is empty; it needs at least one job", field: "jobs") }
        var objects: [JSONValue] = []
        let decoder = JSONDecoder()
        if trimmed.hasPrefix("[") {
            guard let array = try? decoder.decode([JSONValue].self, from: Data(trimmed.utf8)) else {
                throw CLIError.badInput("the batch file is not a valid JSON array of objects")
            }
            objects = array
        } else {
            for (n, line) in trimmed.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let l = line.trimmingCharacters(in: .whitespaces)
                if l.isEmpty { continue }
                guard let o = try? decoder.decode(JSONValue.self, from: Data(l.utf8)) else {
                    throw CLIError.badInput("line \(n + 1) of the batch file is not valid JSON")
                }
                objects.append(o)
            }
        }
        return objects
    }
}

/// `status --json`: the job's fields plus `result` (the stored image's metadata, or null).
struct JobWithResult: Encodable {
    var job: Job
    var result: JobResultInfo?

    func encode(to encoder: any Encoder) throws {
        try job.encode(to: encoder)
        enum Key: String, CodingKey { case result }
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(result, forKey: .result)
    }
}
