import ArgumentParser
import Foundation
import JobEngine
import Logging
import Postgres
import ServiceLifecycle
import UnixSignals

/// The fleet-wide maintenance's settings: `worker` (which takes part unless
/// `--no-maintenance`) and `maintain` take the same flags.
struct MaintenanceOptions: ParsableArguments {
    @Option(help: "Seconds without a heartbeat after which a running job is rescued (the workers' lease).") var lease: Double = 60
    @Option(help: "Seconds between sweep attempts.") var sweepInterval: Double = 15
    @Option(help: "Seconds past its deadline after which the sweep ends a job.") var stuckGrace: Double = 30
    @Option(help: "Base of the retry backoff in seconds (1 s, 2 s, 4 s …).") var backoffBase: Double = 1
    @Option(help: ArgumentHelp("Delete finished jobs older than this in the sweep (e.g. 7d), or off.", valueName: "age|off"))
    var retention = "7d"

    func validate() throws {
        if retention != "off" && Age(argument: retention) == nil { throw ValidationError(Age.invalid("--retention", retention) + ", or off") }
        for (flag, value) in [("--lease", lease), ("--sweep-interval", sweepInterval), ("--stuck-grace", stuckGrace), ("--backoff-base", backoffBase)]
        where !(value.isFinite && value > 0 && value <= 86_400) {
            throw ValidationError("\(flag) must be a number of seconds above 0 and at most 86400")
        }
    }

    var configuration: MaintenanceConfiguration {
        MaintenanceConfiguration(
            interval: .seconds(sweepInterval), lease: .seconds(lease), stuckGrace: .seconds(stuckGrace),
            backoff: RetryBackoff(base: .seconds(backoffBase)), retention: retention == "off" ? nil : Age(argument: retention)!.duration)
    }
}

/// `imagejobs maintain`: the maintenance alone, for deployments that run it apart from the
/// workers (`worker --no-maintenance`).
struct MaintainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "maintain",
        abstract: "Run the fleet-wide maintenance alone until SIGTERM/SIGINT, or one round with --once.",
        discussion: """
            Each round, if no other process leads one: rescue the jobs of lost workers, end jobs far past \
            their deadline, fold the queue-position counts, then delete finished jobs older than --retention. \
            Any number of processes may run it; one at a time leads (an advisory lock).
            """)
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var maintenance: MaintenanceOptions
    @Flag(help: "Run one round now, print what it did and exit.") var once = false
    @Flag(help: "With --once, print JSON.") var json = false

    func run() async throws {
        try await runCommand {
            let pool = try database.pool()
            if once {
                let round = try await Maintenance(pool: pool, configuration: maintenance.configuration, logger: database.logger()).runOnce()
                await pool.close()
                if json { return try printJSON(round) }
                guard round.led else { return print("another process is running the sweep; nothing done") }
                print("rescued \(round.rescued) jobs; pruned \(round.pruned.jobs) finished jobs, \(round.pruned.batches) batches, \(round.pruned.workers) worker records")
                return
            }
            LoggingSystem.bootstrapOnce(level: database.logLevel(default: "info"))
            let logger = database.logger(defaultLevel: "info")
            let service = Maintenance(pool: pool, configuration: maintenance.configuration, logger: logger) { round in
                if round.rescued + round.pruned.jobs > 0 {
                    logger.info("maintenance round", metadata: ["rescued": "\(round.rescued)", "pruned": "\(round.pruned.jobs)"])
                }
            }
            logger.info("maintenance started", metadata: ["interval_s": "\(maintenance.sweepInterval)"])
            let group = ServiceGroup(
                configuration: .init(services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
            await pool.close()
        }
    }
}
