import Foundation
import Logging
import Postgres
import ServiceLifecycle
import Tracing

/// Claims and runs jobs; a ServiceLifecycle `Service` made of the worker's services.
///
/// Its ``Producer`` claims only up to its free slots, in one statement, waking on NOTIFY and
/// polling as a fallback; its ``Executor`` runs each job under its deadline (cancelling the
/// handler and freeing the slot at the deadline even if the handler ignores cancellation);
/// heartbeats keep its running jobs and drop any it no longer owns (`Leases.swift`); it takes
/// part in the fleet-wide ``Maintenance`` unless told not to; and it survives the database
/// going away, reconnecting with capped, jittered backoff. On graceful shutdown it stops
/// claiming, lets running jobs finish within the grace period, then cancels them and hands
/// them back without charging a retry.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    let pool: PGPool
    let handlers: [String: any JobHandler]
    let logger: Logger
    let state: WorkerState
    let metrics: WorkerMetrics
    /// Claims attempts (and writes completions with its claims).
    let producer: Producer
    /// Runs each claimed attempt and records its outcome.
    let executor: Executor
    /// The fleet-wide maintenance this worker takes part in (unless ``WorkerConfiguration/runsMaintenance`` is off).
    let maintenance: Maintenance
    /// Spans each claim (`job.claim`) and each run (`job.run`, a child of the submitter's span).
    let tracer: any Tracer

    /// - Parameter tracer: the process's tracer by default, as bootstrapped when the worker is
    ///   made (bootstrap tracing first).
    public init(
        pool: PGPool, handlers: [any JobHandler], configuration: WorkerConfiguration, logger: Logger,
        tracer: any Tracer = InstrumentationSystem.tracer
    ) {
        precondition(configuration.concurrency >= 1, "concurrency must be at least 1")
        self.pool = pool
        var byKind: [String: any JobHandler] = [:]
        for handler in handlers { byKind[handler.kind] = handler }
        self.handlers = byKind
        self.configuration = configuration
        self.tracer = tracer
        var logger = logger
        logger[metadataKey: "worker.id"] = "\(configuration.id)"
        self.logger = logger
        self.metrics = WorkerMetrics(kinds: byKind.keys.sorted())
        let state = WorkerState(metrics: metrics, concurrency: configuration.concurrency)
        self.state = state
        let completer = Completer(pool: pool, wakeClaimer: { state.wake() })
        let executor = Executor(
            pool: pool, configuration: configuration, handlers: byKind, state: state, completer: completer, metrics: metrics,
            logger: logger, tracer: tracer)
        self.executor = executor
        self.producer = Producer(
            pool: pool, configuration: configuration, kinds: byKind.keys.sorted(), state: state, completer: completer,
            logger: logger, tracer: tracer, deliver: { executor.start($0) })
        self.maintenance = Maintenance(pool: pool, configuration: configuration.maintenance, logger: logger) { round in
            state.update {
                $0.rescued += round.rescued
                $0.pruned += round.pruned.jobs
            }
        }
    }

    /// What the worker has done so far.
    public var counters: WorkerCounters { state.counters }

    /// Runs until cancelled or gracefully shut down.
    public func run() async throws {
        let channel = await resolveChannel()
        await register()
        let listener: PGListener? =
            configuration.listen
            ? PGListener(configuration: pool.configuration, channels: [channel], logger: logger) : nil
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.producer.run() }
                group.addTask { await self.heartbeatLoop() }
                if self.configuration.runsMaintenance {
                    group.addTask { await self.maintenance.loop() }
                }
                group.addTask { await self.deadlineLoop() }
                group.addTask { await self.progressLoop() }
                group.addTask { await self.metricsLoop(listener) }
                if let listener {
                    group.addTask { await self.consume(listener) }
                }
                await group.next()  // the producer ends first: on shutdown or cancellation
                listener?.stop()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.state.beginShutdown()
        }
        await finishRunningJobs()
        _ = try? await pool.query(JobSQL.stopWorker(id: configuration.id))
        logger.info("worker stopped", metadata: ["worker.completed": "\(state.counters.completed)"])
    }

    private func resolveChannel() async -> String {
        var attempt = 0
        while !Task.isCancelled {
            do {
                let row = try await pool.query(JobSQL.currentSchema())[0]
                return JobQueue.channel(schema: try row.decode("schema"))
            } catch {
                attempt += 1
                logger.warning("database unavailable; retrying", metadata: ["error": "\(error)"])
                await configuration.reconnectDelay(attempt)
            }
        }
        return JobQueue.channel(schema: "public")
    }

    private func register() async {
        var attempt = 0
        let kinds = handlers.keys.sorted()
        while !Task.isCancelled && !state.isShuttingDown {
            do {
                try await pool.query(
                    JobSQL.registerWorker(
                        id: configuration.id, host: ProcessInfo.processInfo.hostName, pid: Int(getpid()),
                        concurrency: configuration.concurrency, kinds: kinds
                    ))
                logger.info("worker started", metadata: ["worker.concurrency": "\(configuration.concurrency)", "worker.kinds": "\(kinds.joined(separator: ","))"])
                return
            } catch {
                attempt += 1
                logger.warning("could not register the worker; retrying", metadata: ["error": "\(error)"])
                await configuration.reconnectDelay(attempt)
            }
        }
    }

    /// Wake-ups from NOTIFY: a new job wakes the producer; a pause or resume makes it read the
    /// paused kinds before its next claim; a cancel interrupts the attempts of cancelled jobs
    /// this worker runs.
    private func consume(_ listener: PGListener) async {
        for await event in listener {
            switch event {
            case .connected:
                state.wake()
            case .notification(_, let payload):
                if payload.hasPrefix("cancel") {
                    await checkCancelled()
                } else {
                    if payload == "pause" { producer.pausesChanged() }
                    state.wake()
                }
            }
        }
    }

    /// After a cancel notification: interrupt running jobs that were cancelled.
    private func checkCancelled() async {
        let running = state.runningAttempts()
        guard !running.isEmpty else { return }
        guard let rows = try? await pool.query(JobSQL.cancelledAmong(ids: running.map(\.0)))
        else { return }
        for row in rows {
            if let id: UUID = try? row.decode("id") { state.interrupt(id, reason: .cancelled) }
        }
    }

    /// Runs a maintenance round now (whether or not this worker takes part in maintenance):
    /// the sweep if no other process is running it, then retention's prune.
    @discardableResult
    public func sweepOnce() async throws -> MaintenanceRound {
        try await maintenance.runOnce()
    }

    private func finishRunningJobs() async {
        let deadline = ContinuousClock.now + configuration.shutdownGrace
        while state.runningCount > 0 && ContinuousClock.now < deadline {
            await state.waitForWake(timeout: .milliseconds(100))
        }
        for (id, _) in state.runningAttempts() { state.interrupt(id, reason: .shutdown) }
        while state.runningCount > 0 {
            await state.waitForWake(timeout: .milliseconds(100))
        }
    }
}
