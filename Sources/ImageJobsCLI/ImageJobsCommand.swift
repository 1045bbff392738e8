import ArgumentParser
import Foundation
import ImageJobs
import JobEngine
import Logging
import Postgres

/// The `imagejobs` command.
public struct ImageJobsCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "imagejobs",
        abstract: "A PostgreSQL-backed job queue for image generation.",
        version: "0.1.0",
        subcommands: [
            Migrate.self, Submit.self, Status.self, Position.self, List.self, Batch.self, Cancel.self, Retry.self,
            Fetch.self, Watch.self, WorkerCommand.self, MaintainCommand.self, Report.self, Prune.self, BenchCommand.self,
            Limits.self, Pause.self, Resume.self, Serve.self, APIKeysCommand.self, WebhooksCommand.self,
        ])

    public init() {}

    /// Parses the process's arguments and runs the command (the executable's whole `main`).
    public static func runMain() async {
        await main()
    }
}

extension ImageJobsCommand {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply, revert or list schema migrations.",
            subcommands: [Up.self, Down.self, MigrateStatus.self])

        struct Up: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Apply pending migrations (all, or up to --to).")
            @OptionGroup var database: DatabaseOptions
            @Option(help: "Stop after this version.") var to: Int?
            @Flag(help: "Print what would run without running it.") var dryRun = false

            func run() async throws {
                try await runCommand {
                    let pool = try database.pool(maxConnections: 1)
                    let applied = try await Migrator(pool: pool, logger: database.logger()).up(to: to, dryRun: dryRun)
                    if applied.isEmpty { print("nothing to apply: the schema is up to date") }
                    for m in applied { print("\(dryRun ? "would apply" : "applied") \(m.fileStem)") }
                    await pool.close()
                }
            }
        }

        struct Down: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Revert the last migration (or down to --to, keeping it; 0 reverts all).")
            @OptionGroup var database: DatabaseOptions
            @Option(help: "Revert down to this version (kept).") var to: Int?
            @Flag(help: "Print what would run without running it.") var dryRun = false

            func run() async throws {
                try await runCommand {
                    let pool = try database.pool(maxConnections: 1)
                    let reverted = try await Migrator(pool: pool, logger: database.logger()).down(to: to, dryRun: dryRun)
                    if reverted.isEmpty { print("nothing to revert") }
                    for m in reverted { print("\(dryRun ? "would revert" : "reverted") \(m.fileStem)") }
                    await pool.close()
                }
            }
        }

        struct MigrateStatus: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "status", abstract: "List migrations and whether each is applied.")
            @OptionGroup var database: DatabaseOptions
            @Flag(help: "Print JSON.") var json = false

            func run() async throws {
                try await runCommand {
                    let pool = try database.pool(maxConnections: 1)
                    let lines = try await Migrator(pool: pool, logger: database.logger()).status()
                    await pool.close()
                    if json { return try printJSON(lines) }
                    print(table(["version", "name", "state", "applied at"], lines.map {
                        [String(format: "%04d", $0.version), $0.name, $0.changed ? "applied, FILE CHANGED" : $0.applied ? "applied" : "pending",
                         $0.appliedAt.map(ISO8601.format) ?? ""]
                    }))
                }
            }
        }
    }
}
