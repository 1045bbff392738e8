import ArgumentParser
import Foundation
import JobEngine
import Postgres

extension ImageJobsCommand {
    struct Fetch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a completed job's image to a file.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The job's id.") var id: String
        @Option(name: [.customShort("o"), .long], help: "Where to write the PNG (- for standard output).") var output: String

        func run() async throws {
            try await runCommand {
                let jobID = try parseUUID(id, field: "id")
                let pool = try database.pool(maxConnections: 1)
                guard let bytes = try await JobResults.bytes(jobID, pool: pool) else {
                    let job = try await JobQueue(pool: pool, logger: database.logger()).job(jobID)
                    throw JobQueueError(.notFound, "job \(jobID.lowercasedString) has no stored image (it is \(job.status.rawValue))", jobID: jobID)
                }
                if output == "-" {
                    FileHandle.standardOutput.write(Data(bytes))
                } else {
                    try Data(bytes).write(to: URL(fileURLWithPath: output))
                    FileHandle.standardError.write(Data("wrote \(bytes.count) bytes to \(output)\n".utf8))
                }
                await pool.close()
            }
        }
    }

    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show live progress of a conversation's jobs: counts per status and the positions of waiting jobs.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "The conversation to watch.") var conversation: String
        @Option(help: "Seconds between refreshes.") var interval: Double = 0.5
        @Flag(help: "Exit once every job is completed, in error or cancelled.") var untilDone = false
        @Option(help: "Give up after this many seconds.") var timeout: Double = 600

        func run() async throws {
            try await runCommand {
                let conversationID = try parseUUID(conversation, field: "conversation")
                let queue = try database.queue()
                let deadline = Date().addingTimeInterval(timeout)
                let interactive = isatty(1) != 0
                while true {
                    let jobs = try await queue.list(groupID: conversationID, limit: 10_000)
                    var counts: [JobStatus: Int] = [:]
                    for job in jobs { counts[job.status, default: 0] += 1 }
                    var waiting: [String] = []
                    let pending = jobs.filter { $0.status == .pending }
                        .sorted { ($0.priority, $0.createdAt) < ($1.priority, $1.createdAt) }
                    for job in pending.prefix(4) {
                        if let p = try? await queue.position(job.id), let position = p.position {
                            let eta = p.etaSeconds.map { String(format: " ~%.0fs", $0) } ?? ""
                            waiting.append("…\(job.id.uuidString.suffix(6).lowercased()) \(job.priority.rawValue) #\(position)\(eta)")
                        }
                    }
                    let line = JobStatus.allCases.map { "\($0.rawValue) \(counts[$0, default: 0])" }.joined(separator: " · ")
                        + (waiting.isEmpty ? "" : "  | waiting: " + waiting.joined(separator: ", "))
                    FileHandle.standardOutput.write(Data((interactive ? "\r\u{1B}[2K" + line : line + "\n").utf8))
                    let done = !jobs.isEmpty && jobs.allSatisfy { $0.status.isFinal }
                    if (untilDone && done) || Date() > deadline {
                        if interactive { FileHandle.standardOutput.write(Data("\n".utf8)) }
                        return
                    }
                    try await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
                }
            }
        }
    }
}
