import ArgumentParser
import Foundation
import ImageJobs
import JobEngine
import Logging
import Postgres
import ServiceLifecycle
import UnixSignals

/// `imagejobs worker`: claims and runs jobs until SIGTERM or SIGINT.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Run jobs until SIGTERM/SIGINT (running jobs then finish within the grace period).")
    @OptionGroup var options: WorkerOptions

    func run() async throws {
        try await options.run()
    }
}

/// The worker's flags and how they make a worker: `imagejobs worker`, and the drills' worker
/// (which adds its own handlers), take the same ones.
package struct WorkerOptions: ParsableArguments {
    @OptionGroup var database: DatabaseOptions
    @Option(help: "Jobs run at once.") var concurrency: Int = 2
    @Option(help: "Image backend: procedural (offline, default), automatic1111, openai or command ($IMAGEJOBS_GENERATOR).")
    var generator: String = ProcessInfo.processInfo.environment["IMAGEJOBS_GENERATOR"] ?? "procedural"
    @Option(help: "Base URL of the automatic1111 or openai backend ($IMAGEJOBS_GENERATOR_URL).")
    var generatorURL: String = ProcessInfo.processInfo.environment["IMAGEJOBS_GENERATOR_URL"] ?? ""
    @Option(help: "Program and arguments of the command backend ($IMAGEJOBS_GENERATOR_COMMAND).")
    var generatorCommand: String = ProcessInfo.processInfo.environment["IMAGEJOBS_GENERATOR_COMMAND"] ?? ""
    @Option(help: "Default model of the openai backend.") var generatorModel: String = "gpt-image-1"
    @Option(help: "Also write each image as <job id>.png into this directory.") var outputDir: String?
    @Option(help: "Seconds between polls when no NOTIFY arrives.") var pollInterval: Double = 1
    @Option(help: "Seconds between heartbeats of running jobs.") var heartbeatInterval: Double = 10
    @OptionGroup var maintenance: MaintenanceOptions
    @Flag(help: "Take no part in the fleet-wide maintenance (run `imagejobs maintain` or other workers for it).")
    var noMaintenance = false
    @Option(help: "Seconds running jobs may finish after SIGTERM.") var shutdownGrace: Double = 30
    @Option(help: "Serve Prometheus metrics on this port (GET /metrics).") var metricsPort: Int?
    @Option(help: "Address the metrics server binds.") var metricsHost = "0.0.0.0"
    @Option(help: "Seconds between samples of the queue depth for the metrics.") var queueDepthInterval: Double = 15
    @Option(help: "Database connections of this process.") var maxConnections: Int?
    @Flag(help: "Poll only; no LISTEN (for PgBouncer in transaction mode).") var noListen = false

    package init() {}

    package func validate() throws {
        if !(1...1000).contains(concurrency) { throw ValidationError("--concurrency must be 1–1000") }
        if !["procedural", "automatic1111", "openai", "command"].contains(generator) {
            throw ValidationError("--generator must be procedural, automatic1111, openai or command")
        }
        if ["automatic1111", "openai"].contains(generator) {
            guard let url = URL(string: generatorURL), url.scheme == "http" || url.scheme == "https" else {
                throw ValidationError("--generator \(generator) needs --generator-url http(s)://host:port (or IMAGEJOBS_GENERATOR_URL)")
            }
        }
        if generator == "command" && generatorCommand.isEmpty {
            throw ValidationError("--generator command needs --generator-command \"PROGRAM ARGS\" (or IMAGEJOBS_GENERATOR_COMMAND)")
        }
        if maintenance.lease <= heartbeatInterval * 2 { throw ValidationError("--lease must be more than twice --heartbeat-interval") }
        if let metricsPort, !(1...65535).contains(metricsPort) { throw ValidationError("--metrics-port must be 1–65535") }
    }

    /// Runs the worker with the image and webhook handlers, and `extraHandlers` for kinds of their own.
    package func run(extraHandlers: [any JobHandler] = []) async throws {
        try await runCommand {
            // A worker logs at info unless told otherwise: claims and completions stay at debug,
            // retries, timeouts, rescues and reconnects show.
            LoggingSystem.bootstrapOnce(level: database.logLevel(default: "info"))
            let logger = database.logger(defaultLevel: "info")
            var config = WorkerConfiguration()
            config.concurrency = concurrency
            config.pollInterval = .milliseconds(Int64(pollInterval * 1000))
            config.heartbeatInterval = .milliseconds(Int64(heartbeatInterval * 1000))
            let fleet = maintenance.configuration
            config.lease = fleet.lease
            config.sweepInterval = fleet.interval
            config.stuckGrace = fleet.stuckGrace
            config.backoff = fleet.backoff
            config.retention = fleet.retention
            config.runsMaintenance = !noMaintenance
            config.shutdownGrace = .milliseconds(Int64(shutdownGrace * 1000))
            config.listen = !noListen
            var metricsServer: MetricsServer?
            if let metricsPort {
                metricsServer = try MetricsServer.start(host: metricsHost, port: metricsPort)
                config.queueDepthSampleInterval = .milliseconds(Int64(max(0.1, queueDepthInterval) * 1000))
                logger.info("serving metrics", metadata: ["metrics.url": "http://\(metricsHost):\(metricsServer!.port)/metrics"])
            }
            defer { metricsServer?.stop() }
            var pgConfig = try database.configuration()
            // One name per process, so operators (and the fault drills) can tell backends apart.
            pgConfig.applicationName = "imagejobs-worker-\(getpid())"
            let pool = PGPool(
                configuration: pgConfig, options: .init(maxConnections: maxConnections ?? min(8, concurrency + 2)), logger: logger)
            let imageGenerator = try makeGenerator()
            var handlers: [any JobHandler] = [
                ImageJobHandler(generator: imageGenerator, outputDirectory: outputDir.map { URL(fileURLWithPath: $0) }),
                WebhookDeliveryHandler(),
            ]
            handlers += extraHandlers
            let worker = Worker(pool: pool, handlers: handlers, configuration: config, logger: logger)
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: worker)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
            await pool.close()
        }
    }
}

extension WorkerOptions {
    func makeGenerator() throws -> any ImageGenerator {
        switch generator {
        case "automatic1111":
            return Automatic1111Generator(baseURL: URL(string: generatorURL)!)
        case "openai":
            let env = ProcessInfo.processInfo.environment
            return OpenAIGenerator(
                baseURL: URL(string: generatorURL)!, apiKey: env["IMAGEJOBS_OPENAI_API_KEY"] ?? env["OPENAI_API_KEY"],
                defaultModel: generatorModel)
        case "command":
            do { return try CommandGenerator(commandLine: generatorCommand) } catch { throw CLIError.badInput("\(error)") }
        default:
            return ProceduralGenerator()
        }
    }
}

extension LoggingSystem {
    nonisolated(unsafe) private static var bootstrapped = false
    /// Logs to stderr at the given level, once per process.
    static func bootstrapOnce(level: String) {
        guard !bootstrapped else { return }
        bootstrapped = true
        bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Logger.Level(rawValue: level) ?? .info
            return handler
        }
    }
}
