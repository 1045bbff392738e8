import Foundation
import Logging
import Postgres
import Tracing

/// The worker's producer: its claim loop. Completions ride along with claims: one statement
/// completes the attempts whose handlers finished (see ``Completer``) and claims as many new
/// jobs as that frees, so a busy worker spends one round trip and one transaction per cycle, not
/// two. Wake-ups come from LISTEN or the poll interval.
final class Producer: Sendable {
    let pool: PGPool
    let configuration: WorkerConfiguration
    let kinds: [String]
    let state: WorkerState
    let completer: Completer
    let logger: Logger
    let tracer: any Tracer
    /// Where claimed attempts go (the executor).
    let deliver: @Sendable (ClaimedJob) -> Void
    /// The paused kinds as last read (`*`: all), and whether a pause or resume was announced
    /// since: every claim reads them again, so this is at most one claim old.
    private let pauses = PauseState()

    init(
        pool: PGPool, configuration: WorkerConfiguration, kinds: [String], state: WorkerState, completer: Completer,
        logger: Logger, tracer: any Tracer, deliver: @escaping @Sendable (ClaimedJob) -> Void
    ) {
        self.pool = pool
        self.configuration = configuration
        self.kinds = kinds
        self.state = state
        self.completer = completer
        self.logger = logger
        self.tracer = tracer
        self.deliver = deliver
    }

    /// What one cycle did.
    struct Cycle: Sendable, Equatable {
        /// Attempts claimed and delivered.
        var claimed = 0
        /// The most this cycle could claim (its free slots, up to ``JobSQL/maxClaim``).
        var limit = 0
        /// Whether a completion's row was held by another statement and waits for the next cycle.
        var busy = false

        /// Whether it claimed all it could: more may be waiting.
        var claimedAll: Bool { limit > 0 && claimed == limit }
    }

    /// Claims until cancelled or shut down.
    func run() async {
        var failures = 0
        var busyRounds = 0
        completer.attach()
        defer { completer.detach() }
        while !Task.isCancelled && !state.isShuttingDown {
            let cycle: Cycle
            do {
                cycle = try await runOnce()
                failures = 0
            } catch {
                // Cancelled mid-statement (the worker is stopping): not a claim failure.
                if Task.isCancelled { break }
                failures += 1
                state.update { $0.claimErrors += 1 }
                if failures == 1 || failures % 20 == 0 {
                    logger.warning("claim failed; retrying", metadata: ["error": "\(error)", "claim.failures": "\(failures)"])
                }
                await configuration.reconnectDelay(failures)
                continue
            }
            if cycle.claimedAll { continue }  // more may be waiting; go again at once
            if cycle.busy {
                // Completions whose rows another statement held locked went back to the
                // completer; a claimer's lock lasts one statement, so try again in a moment,
                // backing off (up to the poll interval) if something holds the row longer.
                busyRounds += 1
                try? await Task.sleep(for: min(.milliseconds(2) * (1 << min(busyRounds - 1, 10)), configuration.pollInterval))
                continue
            }
            busyRounds = 0
            await state.waitForWake(timeout: configuration.pollInterval)
        }
    }

    /// A pause or resume was announced: read the paused kinds before the next claim.
    func pausesChanged() {
        pauses.markStale()
    }

    /// One cycle: writes the completions waiting and claims up to the free slots, in one
    /// statement, delivering each claimed attempt (a job of a kind paused meanwhile is handed
    /// back unstarted). Nothing to write and no free slot: no statement.
    func runOnce() async throws -> Cycle {
        if pauses.isStale {
            pauses.update(try await pool.query(JobSQL.pausedKinds())[0].decode("paused_kinds"))
        }
        let liveKinds = pauses.live(kinds)
        let completions = completer.takeForClaim()
        if liveKinds.isEmpty && completions.isEmpty {
            // Every kind this worker runs is paused: look again at the next wake-up or poll.
            pauses.markStale()
            return Cycle()
        }
        // Attempts completed by this statement free their slots with it. (Attempts just claimed
        // may still be counted with the ones they replace, so this can be 0 while completions
        // wait: they are written all the same.)
        let free = max(0, configuration.concurrency - state.runningCount + completions.count)
        // At most `maxClaim` per statement (the rest at once in the next): each limit is a
        // prepared statement of its own on the server (see `completeAndClaim`).
        var cycle = Cycle(limit: liveKinds.isEmpty ? 0 : JobSQL.claimLimit(free))
        guard cycle.limit > 0 || !completions.isEmpty else { return cycle }
        var resolved = completions.isEmpty
        do {
            let limit = cycle.limit
            let rows = try await tracer.withSpan("job.claim", ofKind: .client) { span in
                span.attributes["claim.limit"] = limit
                span.attributes["claim.completions"] = completions.count
                return try await pool.query(
                    JobSQL.completeAndClaim(
                        ids: completions.map(\.id), attempts: completions.map(\.attempt),
                        workerID: configuration.id, kinds: liveKinds, limit: limit))
            }
            if !completions.isEmpty {
                let done: [UUID] = try rows.first?.decode("completed_ids") ?? []
                cycle.busy = completer.resolve(completions, completed: Set(done), busy: Set(try rows.first?.decode("busy_ids") ?? []))
                resolved = true
            }
            if let first = rows.first { pauses.update(try first.decode("paused_kinds")) }
            for row in rows where !row.isNull("id") {
                let job = try JobSQL.decodeJob(row)
                cycle.claimed += 1
                if pauses.isPaused(job.kind) {
                    _ = try? await pool.query(JobSQL.release(id: job.id, attempt: job.attempt))
                    continue
                }
                let remaining: Double = try row.decode("remaining_s")
                deliver(ClaimedJob(job: job, remainingSeconds: remaining, traceContext: try row.decode("trace_context")))
            }
            return cycle
        } catch {
            if !resolved { completer.fail(completions, error) }
            throw error
        }
    }
}

/// Gathers completions and gets them written many to a statement, fenced per job.
///
/// While the claim loop runs (attached), completions ride with its next claim statement, which
/// a completion wakes at once; otherwise (shutdown) the completer writes them itself, one
/// statement in flight at a time, the next ones gathering meanwhile. Each job still gets its
/// own answer (completed, or stale).
final class Completer: @unchecked Sendable {
    struct Pending {
        var id: UUID
        var attempt: Int
        var continuation: CheckedContinuation<Bool, any Error>
    }
    private let pool: PGPool
    private let wakeClaimer: @Sendable () -> Void
    private let lock = NSLock()
    private var pending: [Pending] = []
    private var flushing = false
    /// Whether the claim loop takes completions with its claims (it runs and has not stopped).
    private var attached = false
    /// Most completions per statement.
    static let maxBatch = 500

    init(pool: PGPool, wakeClaimer: @escaping @Sendable () -> Void) {
        self.pool = pool
        self.wakeClaimer = wakeClaimer
    }

    /// Marks one attempt completed; `false` when the attempt is no longer the job's current one.
    /// While the claim loop runs, the completion rides with its next claim (woken now);
    /// otherwise (shutdown) it is written on its own, batched with any others waiting.
    func complete(_ id: UUID, attempt: Int) async throws -> Bool {
        try await withCheckedThrowingContinuation { continuation in
            lock.lock()
            pending.append(Pending(id: id, attempt: attempt, continuation: continuation))
            let ride = attached
            let start = !ride && !flushing
            if start { flushing = true }
            lock.unlock()
            if ride { wakeClaimer() }
            if start { Task { await self.flushLoop() } }
        }
    }

    func attach() {
        lock.lock()
        attached = true
        lock.unlock()
    }

    /// The claim loop stopped: write what is waiting (and whatever comes) without it.
    func detach() {
        lock.lock()
        attached = false
        let start = !pending.isEmpty && !flushing
        if start { flushing = true }
        lock.unlock()
        if start { Task { await self.flushLoop() } }
    }

    /// The completions the claim loop's next statement carries.
    func takeForClaim() -> [Pending] {
        lock.lock()
        defer { lock.unlock() }
        let batch = Array(pending.prefix(Self.maxBatch))
        pending.removeFirst(batch.count)
        return batch
    }

    /// Answers each completion of `batch`: completed, or stale; those in `busy` (rows held
    /// locked by another statement at that instant) go back to the front of the queue for the
    /// next statement. Returns whether any went back.
    @discardableResult
    func resolve(_ batch: [Pending], completed: Set<UUID>, busy: Set<UUID> = []) -> Bool {
        var again: [Pending] = []
        for item in batch {
            if completed.contains(item.id) {
                item.continuation.resume(returning: true)
            } else if busy.contains(item.id) {
                again.append(item)
            } else {
                item.continuation.resume(returning: false)
            }
        }
        guard !again.isEmpty else { return false }
        lock.lock()
        pending.insert(contentsOf: again, at: 0)
        lock.unlock()
        return true
    }

    func fail(_ batch: [Pending], _ error: any Error) {
        for item in batch { item.continuation.resume(throwing: error) }
    }

    private func take() -> [Pending] {
        lock.lock()
        defer { lock.unlock() }
        if pending.isEmpty || attached {
            flushing = false
            if attached && !pending.isEmpty { wakeClaimer() }
            return []
        }
        let batch = Array(pending.prefix(Self.maxBatch))
        pending.removeFirst(batch.count)
        return batch
    }

    private func flushLoop() async {
        while true {
            let batch = take()
            if batch.isEmpty { return }
            do {
                let rows = try await pool.query(
                    JobSQL.complete(ids: batch.map(\.id), attempts: batch.map(\.attempt)))
                resolve(batch, completed: Set(try rows.map { try $0.decode("id", as: UUID.self) }))
            } catch {
                fail(batch, error)
            }
        }
    }
}

/// The paused kinds a producer last read, shared between its claim loop and the listener.
final class PauseState: @unchecked Sendable {
    private let lock = NSLock()
    private var paused: Set<String> = []
    private var stale = true

    var isStale: Bool { lock.lock(); defer { lock.unlock() }; return stale }

    func markStale() {
        lock.lock()
        stale = true
        lock.unlock()
    }

    func update(_ kinds: [String]) {
        lock.lock()
        paused = Set(kinds)
        stale = false
        lock.unlock()
    }

    func isPaused(_ kind: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return paused.contains(kind) || paused.contains(allKinds)
    }

    /// `kinds` without the paused ones.
    func live(_ kinds: [String]) -> [String] {
        lock.lock()
        defer { lock.unlock() }
        return paused.contains(allKinds) ? [] : kinds.filter { !paused.contains($0) }
    }
}
