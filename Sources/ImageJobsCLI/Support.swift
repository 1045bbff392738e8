import ArgumentParser
import Foundation
import ImageJobs
import JobEngine
import Logging
import Postgres

/// Options every command that talks to the database takes.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("PostgreSQL URL or conninfo (default: $DATABASE_URL, then the PG* variables).", valueName: "url"))
    var databaseURL: String?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error (default: warning; info for worker).", valueName: "level"))
    var logLevelOption: String?

    /// The chosen level, or the command's default.
    func logLevel(default level: String = "warning") -> String { logLevelOption ?? level }

    func configuration() throws -> PGConfiguration {
        let configuration = PGConfiguration.resolve(explicit: databaseURL)
        do { try configuration.validate() } catch { throw CLIError.badInput("\(error)") }
        return configuration
    }

    func logger(defaultLevel: String = "warning") -> Logger {
        var logger = Logger(label: "imagejobs")
        logger.logLevel = Logger.Level(rawValue: logLevel(default: defaultLevel)) ?? .warning
        return logger
    }

    func pool(maxConnections: Int = 2) throws -> PGPool {
        PGPool(configuration: try configuration(), options: .init(maxConnections: maxConnections), logger: logger())
    }

    func queue() throws -> JobQueue {
        JobQueue(pool: try pool(), logger: logger())
    }
}

/// Exit codes, listed in the README.
enum ExitStatus {
    static let badInput: Int32 = 64
    static let invalidState: Int32 = 65
    static let notFound: Int32 = 66
    static let databaseUnavailable: Int32 = 69
    static let failure: Int32 = 1
}

enum CLIError: Error {
    case badInput(String)
}

/// Runs a command body, turning errors into a message on stderr and the matching exit code.
func runCommand(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ExitCode {
        throw error
    } catch let error as CleanExit {
        throw error
    } catch {
        let (message, code) = describe(error)
        FileHandle.standardError.write(Data("imagejobs: \(message)\n".utf8))
        throw ExitCode(code)
    }
}

func describe(_ error: any Error) -> (String, Int32) {
    switch error {
    case CLIError.badInput(let message):
        return (message, ExitStatus.badInput)
    case let e as JobQueueError:
        switch e.code {
        case .invalidInput, .duplicate: return (e.description, ExitStatus.badInput)
        case .notFound: return (e.description, ExitStatus.notFound)
        case .invalidState: return (e.description, ExitStatus.invalidState)
        case .databaseUnavailable: return (e.description, ExitStatus.databaseUnavailable)
        default: return (e.description, ExitStatus.failure)
        }
    case let e as PGError:
        if e.kind == .invalidConfiguration { return (e.description, ExitStatus.badInput) }
        if e.isTransient || e.kind == .connectionFailed { return (e.description, ExitStatus.databaseUnavailable) }
        return (e.description, ExitStatus.failure)
    case let e as PGTransactionError:
        return describe(e.underlying)
    case let e as MigrationError:
        return (e.description, ExitStatus.failure)
    default:
        return ("\(error)", ExitStatus.failure)
    }
}

func parseUUID(_ text: String, field: String) throws -> UUID {
    guard let id = UUID(uuidString: text) else {
        throw CLIError.badInput("\(field): \"\(text.prefix(40))\" is not a UUID (expected e.g. 0b7e2c4e-8a51-4d2a-9f3e-2b1c0d9e8f7a)")
    }
    return id
}

/// Prints a value as the product's JSON (`conversation_id` for the engine's `group_id`).
func printJSON(_ value: some Encodable) throws {
    print(String(decoding: try ProductJSON.encode(value), as: UTF8.self))
}

/// A plain text table.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
}
