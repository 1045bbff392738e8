import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A serial executor that runs every job on one dedicated OS thread.
///
/// libpq is blocking. A blocking call on Swift's cooperative pool (as wide as the core count, two
/// threads on a two-core machine) freezes every task in the process, so each connection gets a
/// thread of its own and its actor is isolated to it. Actor serialisation then also gives libpq's
/// rule "one thread at a time per `PGconn`" by construction.
///
/// The thread lives until ``shutdown()`` is called and the queue has drained.
public final class PGThreadExecutor: SerialExecutor, @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private enum Work {
        case job(UnownedJob)
        case closure(() -> Void)
    }
    private var queue: [Work] = []
    private var head = 0
    private var stopping = false
    private var threadID: pthread_t?
    private let name: String

    /// Starts the thread.
    /// - Parameter name: the thread's name as shown by debuggers and `top -H` (at most 15 bytes used).
    public init(name: String) {
        self.name = name
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
        let started = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            self.lock()
            self.threadID = pthread_self()
            self.unlock()
            started.signal()
            self.runLoop()
        }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
        started.wait()
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    private func lock() { pthread_mutex_lock(&mutex) }
    private func unlock() { pthread_mutex_unlock(&mutex) }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        lock()
        queue.append(.job(unowned))
        pthread_cond_signal(&condition)
        unlock()
    }

    /// Runs a synchronous closure on the thread (used before an actor exists, e.g. to connect).
    func enqueueBlocking(_ body: @escaping @Sendable () -> Void) {
        lock()
        queue.append(.closure(body))
        pthread_cond_signal(&condition)
        unlock()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Whether the caller runs on this executor's thread.
    public var isCurrentThread: Bool {
        lock()
        defer { unlock() }
        guard let threadID else { return false }
        return pthread_equal(threadID, pthread_self()) != 0
    }

    public func checkIsolated() {
        precondition(isCurrentThread, "expected to run on the \(name) thread")
    }

    /// Lets the thread finish the jobs already queued, then exit.
    public func shutdown() {
        lock()
        stopping = true
        pthread_cond_signal(&condition)
        unlock()
    }

    private func runLoop() {
        while true {
            lock()
            while head == queue.count && !stopping {
                pthread_cond_wait(&condition, &mutex)
            }
            if head == queue.count && stopping {
                unlock()
                return
            }
            let work = queue[head]
            head += 1
            if head > 1024 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            unlock()
            switch work {
            case .job(let job): job.runSynchronously(on: asUnownedSerialExecutor())
            case .closure(let body): body()
            }
        }
    }
}

/// Runs a blocking closure on a fresh thread and resumes the caller when it returns, so the
/// cooperative pool is never blocked. Used for one-off blocking work (a cancel request, a DNS
/// lookup) that has no connection thread of its own.
public func runOnNewThread<T: Sendable>(name: String, _ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            continuation.resume(returning: body())
        }
        thread.name = name
        thread.start()
    }
}
