import ArgumentParser
import Foundation
import ImageJobs
import ImageJobsServer
import JobEngine
import Logging
import Postgres

extension ImageJobsCommand {
    /// `imagejobs serve`: the HTTP API until SIGTERM/SIGINT.
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve the HTTP API (/v1/jobs, /v1/batches, …) and the dashboard (/) until SIGTERM/SIGINT.",
            discussion: """
                Requests authenticate with Authorization: Bearer <key>; make keys with `imagejobs api-keys create`. \
                The dashboard signs in with a key of the admin scope.
                """)
        @OptionGroup var database: DatabaseOptions
        @Option(help: "The address to listen on.") var host = "127.0.0.1"
        @Option(help: "The port to listen on (0: any free port, printed at start).") var port = 8080
        @Option(help: "Database connections the server may hold.") var connections = 8
        @Option(help: "The largest request body accepted, in bytes (a batch of 10,000 jobs needs a few MB).") var maxBodyBytes = 8 << 20

        func validate() throws {
            guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0–65535") }
            guard (1...200).contains(connections) else { throw ValidationError("--connections must be 1–200") }
            guard (1_024...(256 << 20)).contains(maxBodyBytes) else { throw ValidationError("--max-body-bytes must be 1024–268435456") }
        }

        func run() async throws {
            try await runCommand {
                LoggingSystem.bootstrapOnce(level: database.logLevel(default: "info"))
                let logger = database.logger(defaultLevel: "info")
                let pool = try database.pool(maxConnections: connections)
                let server = APIServer(queue: JobQueue(pool: pool, logger: logger), logger: logger, maxBodyBytes: maxBodyBytes)
                try await server.run(host: host, port: port) { bound in
                    // One line on stdout, so a supervisor or a test can read the port.
                    FileHandle.standardOutput.write(Data("listening on http://\(host):\(bound)\n".utf8))
                }
                await pool.close()
            }
        }
    }

    /// `imagejobs api-keys create|list|revoke`.
    struct APIKeysCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "api-keys", abstract: "Make, list and revoke the HTTP API's keys.", subcommands: [Create.self, List.self, Revoke.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Make a key and print it once (the last line of output); only its hash is stored.")
            @OptionGroup var database: DatabaseOptions
            @Option(help: "Comma-separated: read, submit (includes read), admin (everything).") var scopes: String
            @Option(help: "A name to tell keys apart (1–100 characters).") var name = "api key"

            func run() async throws {
                try await runCommand {
                    var set = Set<APIScope>()
                    for part in scopes.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                        guard let scope = APIScope(rawValue: part) else {
                            throw CLIError.badInput("unknown scope \"\(part.prefix(20))\"; allowed: read, submit, admin")
                        }
                        set.insert(scope)
                    }
                    let pool = try database.pool(maxConnections: 1)
                    let (key, info) = try await APIKeys(pool: pool).create(name: name, scopes: set)
                    await pool.close()
                    print("created key \(info.prefix) (\(info.scopes.map(\.rawValue).joined(separator: ","))): shown once, store it now")
                    print(key)
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List keys (by prefix; never the keys themselves).")
            @OptionGroup var database: DatabaseOptions
            @Flag(help: "Print JSON.") var json = false

            func run() async throws {
                try await runCommand {
                    let pool = try database.pool(maxConnections: 1)
                    let keys = try await APIKeys(pool: pool).list()
                    await pool.close()
                    if json { return try printJSON(keys) }
                    print(table(["prefix", "name", "scopes", "created", "revoked"], keys.map {
                        [$0.prefix, $0.name, $0.scopes.map(\.rawValue).joined(separator: ","), ISO8601.format($0.createdAt),
                         $0.revokedAt.map(ISO8601.format) ?? "-"]
                    }))
                }
            }
        }

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Revoke a key by its prefix; requests with it fail from now on.")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The key's prefix, as `api-keys list` shows it.") var prefix: String

            func run() async throws {
                try await runCommand {
                    let pool = try database.pool(maxConnections: 1)
                    let revoked = try await APIKeys(pool: pool).revoke(prefix: prefix)
                    await pool.close()
                    guard revoked else { throw JobQueueError(.notFound, "no live key with prefix \(prefix.prefix(20))") }
                    print("revoked \(prefix.lowercased())")
                }
            }
        }
    }

    /// `imagejobs webhooks allow|disallow|list`: the hosts submits may name as callbacks.
    struct WebhooksCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "webhooks", abstract: "Allow, disallow and list the hosts webhooks may be delivered to.",
            subcommands: [Allow.self, Disallow.self, List.self])

        struct Allow: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Allow callbacks to a host: NAME (default ports), NAME:PORT, or a URL whose host and port are taken.")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The host.") var host: String

            func run() async throws {
                try await runCommand {
                    let pool = try database.pool(maxConnections: 1)
                    let entry = try await Webhooks(pool: pool).allow(host)
                    await pool.close()
                    print("allowed \(entry)")
                }
            }
        }

        struct Disallow: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Stop allowing a host; its queued deliveries fail without being sent.")
            @OptionGroup var database: DatabaseOptions
            @Argument(help: "The host, as `webhooks list` shows it.") var host: String

            func run() async throws {
                try await runCommand {
                    let pool = try database.pool(maxConnections: 1)
                    let removed = try await Webhooks(pool: pool).disallow(host)
                    await pool.close()
                    guard removed else { throw JobQueueError(.notFound, "\(host.prefix(100)) is not an allowed webhook host") }
                    print("disallowed \(host.lowercased())")
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the allowed hosts.")
            @OptionGroup var database: DatabaseOptions
            @Flag(help: "Print JSON.") var json = false

            func run() async throws {
                try await runCommand {
                    let pool = try database.pool(maxConnections: 1)
                    let hosts = try await Webhooks(pool: pool).hosts()
                    await pool.close()
                    if json { return try printJSON(hosts) }
                    hosts.forEach { print($0) }
                }
            }
        }
    }
}
