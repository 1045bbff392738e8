import Foundation
import Logging
import Postgres

/// The worker's mutable state behind a lock: running attempts, counters and the wake signal.
final class WorkerState: @unchecked Sendable {
    private let lock = NSLock()
    private var running: [UUID: (attempt: Int, execution: Execution, deadline: ContinuousClock.Instant)] = [:]
    /// The latest progress each running attempt reported that is not written yet.
    private var unwrittenProgress: [UUID: (attempt: Int, step: Int, total: Int)] = [:]
    private var shuttingDown = false
    private var pendingWake = false
    private var waiter: (id: UInt64, continuation: CheckedContinuation<Void, Never>)?
    private var nextWaiter: UInt64 = 0
    private var expiredWaiter: UInt64 = 0
    private(set) var countersStorage = WorkerCounters()
    private let metrics: WorkerMetrics
    private let concurrency: Int

    init(metrics: WorkerMetrics, concurrency: Int) {
        self.metrics = metrics
        self.concurrency = concurrency
        metrics.slots(free: concurrency, running: 0)
    }

    var counters: WorkerCounters { lock.lock(); defer { lock.unlock() }; return countersStorage }
    var runningCount: Int { lock.lock(); defer { lock.unlock() }; return running.count }
    var isShuttingDown: Bool { lock.lock(); defer { lock.unlock() }; return shuttingDown }

    func update(_ body: (inout WorkerCounters) -> Void) {
        lock.lock()
        let old = countersStorage
        body(&countersStorage)
        let new = countersStorage
        lock.unlock()
        metrics.forward(from: old, to: new)
    }

    func beginShutdown() {
        lock.lock()
        shuttingDown = true
        lock.unlock()
        wake()
    }

    func add(_ id: UUID, attempt: Int, execution: Execution, deadline: ContinuousClock.Instant) {
        lock.lock()
        running[id] = (attempt, execution, deadline)
        let count = running.count
        lock.unlock()
        metrics.slots(free: max(0, concurrency - count), running: count)
    }

    /// Times out every running attempt whose deadline is past.
    func expire(now: ContinuousClock.Instant) {
        lock.lock()
        let due = running.values.filter { $0.deadline <= now }.map(\.execution)
        lock.unlock()
        for execution in due { execution.finish(.timedOut) }
    }

    func remove(_ id: UUID) {
        lock.lock()
        running[id] = nil
        unwrittenProgress[id] = nil
        let count = running.count
        lock.unlock()
        metrics.slots(free: max(0, concurrency - count), running: count)
    }

    /// Keeps the latest progress of a running attempt, to be written by the progress loop.
    func reportProgress(_ id: UUID, attempt: Int, step: Int, total: Int) {
        lock.lock()
        defer { lock.unlock() }
        guard running[id]?.attempt == attempt else { return }
        unwrittenProgress[id] = (attempt, step, total)
    }

    /// The progress reported since the last call, each attempt's latest.
    func takeProgress() -> [(id: UUID, attempt: Int, step: Int, total: Int)] {
        lock.lock()
        defer {
            unwrittenProgress.removeAll()
            lock.unlock()
        }
        return unwrittenProgress.map { ($0.key, $0.value.attempt, $0.value.step, $0.value.total) }
    }

    func runningAttempts() -> [(UUID, Int)] {
        lock.lock()
        defer { lock.unlock() }
        return running.map { ($0.key, $0.value.attempt) }
    }

    /// Interrupts the running attempt of job `id`; with `attempt`, only that attempt (an answer
    /// about an earlier attempt must not stop the retry this worker may already be running).
    func interrupt(_ id: UUID, attempt: Int? = nil, reason: Executor.Interruption) {
        lock.lock()
        let entry = running[id]
        lock.unlock()
        guard let entry, attempt == nil || entry.attempt == attempt else { return }
        entry.execution.finish(.interrupted(reason))
    }

    /// Wakes the claim loop (a slot freed, a NOTIFY arrived); wake-ups coalesce.
    func wake() {
        lock.lock()
        if let waiter {
            self.waiter = nil
            lock.unlock()
            waiter.continuation.resume()
        } else {
            pendingWake = true
            lock.unlock()
        }
    }

    /// Waits for ``wake()`` or the timeout, whichever is first.
    func waitForWake(timeout: Duration) async {
        guard let id = takeWakeOrReserve() else { return }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.timeOut(id)
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            lock.lock()
            if pendingWake || expiredWaiter == id {
                pendingWake = false
                lock.unlock()
                continuation.resume()
            } else {
                waiter = (id, continuation)
                lock.unlock()
            }
        }
        timer.cancel()
    }

    /// Consumes a pending wake-up (`nil`), or reserves a waiter id.
    private func takeWakeOrReserve() -> UInt64? {
        lock.lock()
        defer { lock.unlock() }
        if pendingWake {
            pendingWake = false
            return nil
        }
        nextWaiter += 1
        return nextWaiter
    }

    private func timeOut(_ id: UInt64) {
        lock.lock()
        if let waiter, waiter.id == id {
            self.waiter = nil
            lock.unlock()
            waiter.continuation.resume()
        } else {
            expiredWaiter = id  // fired before the waiter was registered
            lock.unlock()
        }
    }
}
