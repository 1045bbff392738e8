import Foundation
import HTTPTypes
import Hummingbird
import JobEngine
import Logging
import Postgres
import ServiceLifecycle

/// What an event stream follows.
enum Watch: Hashable, Sendable {
    case job(UUID)
    case conversation(UUID)
    /// The whole queue at a glance (the dashboard's overview).
    case overview
}

/// A job as a stream shows it: its row, and its position while pending.
struct JobState: Sendable {
    var job: Job
    var position: QueuePosition?

    /// Whether a stream should hear of the change: the row, the place in the queue or the
    /// reason it waits changed (an ETA that only drifts with the clock is not news).
    func differs(from other: JobState?) -> Bool {
        guard let other else { return true }
        return job != other.job || position?.position != other.position?.position
            || position?.aheadHigherPriority != other.position?.aheadHigherPriority || position?.waiting?.reason != other.position?.waiting?.reason
    }
}

/// What a stream is sent: the watched jobs that changed since it last heard, read at `at` (the
/// database's clock; a reconnecting client sends it back as `Last-Event-ID`), or the overview
/// when it changed. An update with neither is a keep-alive.
struct FeedUpdate: Sendable {
    var at: Date
    var jobs: [JobState]
    var overview: QueueOverview? = nil
}

/// One feed of job state for every event stream of a server process. Each tick reads all
/// watched jobs and conversations in one statement, the positions of the pending ones in one
/// more, and the overview once if any stream shows it, whatever the number of streams; a NOTIFY on the queue's channel (a submit, on one
/// LISTEN connection) starts the next tick at once. Each stream is sent only the jobs whose
/// state changed since its last update, so a reconnecting client (Last-Event-ID) gets every job
/// that finished meanwhile, and an idle stream costs nothing but a keep-alive.
actor JobFeed: Service {
    private struct Stream {
        var watch: Watch
        /// Jobs of a conversation that finished before this are not sent again.
        var since: Date
        var sent: [UUID: JobState] = [:]
        var sentOverview: QueueOverview?
        var lastSent = ContinuousClock.now
        var continuation: AsyncStream<FeedUpdate>.Continuation
    }

    private let queue: JobQueue
    private let tick: Duration
    private let keepAlive: Duration
    private let logger: Logger
    private var streams: [UUID: Stream] = [:]
    private var wake: AsyncStream<Void>.Continuation?
    private var closed = false

    init(queue: JobQueue, tick: Duration = .seconds(1), keepAlive: Duration = .seconds(15), logger: Logger) {
        self.queue = queue
        self.tick = tick
        self.keepAlive = keepAlive
        self.logger = logger
    }

    /// Starts a stream. A conversation's jobs that finished before `since` (default: now) are
    /// not sent; every other watched job is, once, then whenever it changes.
    func subscribe(_ watch: Watch, since: Date?) -> (id: UUID, updates: AsyncStream<FeedUpdate>) {
        let (updates, continuation) = AsyncStream<FeedUpdate>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let id = UUID()
        guard !closed else {
            continuation.finish()
            return (id, updates)
        }
        streams[id] = Stream(watch: watch, since: since ?? Date(), continuation: continuation)
        wake?.yield()
        return (id, updates)
    }

    func unsubscribe(_ id: UUID) {
        streams.removeValue(forKey: id)?.continuation.finish()
    }

    /// Ticks until the server shuts down, then ends every stream so that their responses
    /// finish (an open stream would hold a graceful shutdown forever).
    func run() async throws {
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.wake = wake
        // Ticks run from the start and a NOTIFY only makes the next one sooner, so a database
        // that does not answer yet delays the LISTEN, never the server.
        let relay = Task { [queue, logger] in
            var channel: String?
            while channel == nil, !Task.isCancelled {
                do {
                    channel = try await queue.channel()
                } catch {
                    logger.warning("event feed cannot look up its channel yet; retrying", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            guard let channel else { return }
            let listener = PGListener(configuration: queue.pool.configuration, channels: [channel], logger: logger)
            await withTaskCancellationHandler {
                for await _ in listener { wake.yield() }
            } onCancel: {
                listener.stop()
            }
        }
        let timer = Task { [tick] in
            while !Task.isCancelled {
                try? await Task.sleep(for: tick)
                wake.yield()
            }
        }
        await withGracefulShutdownHandler {
            for await _ in wakes {
                if Task.isCancelled || closed { break }
                await refresh()
            }
        } onGracefulShutdown: {
            wake.finish()
        }
        timer.cancel()
        relay.cancel()
        close()
    }

    /// The pending jobs whose positions a tick reads: every job watched by id, and each
    /// conversation's oldest `perConversation` (a conversation's 10,000-job batch would otherwise
    /// cost 10,000 position reads a tick; the rest show no position until they move up).
    private func positioned(_ jobs: [Job], watchedIDs: Set<UUID>, perConversation: Int = 20) -> [UUID] {
        var taken: [UUID: Int] = [:]
        var out: [UUID] = []
        for job in jobs.sorted(by: { $0.createdAt < $1.createdAt }) where job.status == .pending {
            if watchedIDs.contains(job.id) {
                out.append(job.id)
            } else if taken[job.groupID, default: 0] < perConversation {
                taken[job.groupID, default: 0] += 1
                out.append(job.id)
            }
        }
        return out
    }

    private func close() {
        closed = true
        for stream in streams.values { stream.continuation.finish() }
        streams.removeAll()
    }

    /// One tick: read, compare with what each stream was sent, send the differences.
    private func refresh() async {
        guard !streams.isEmpty else { return }
        var ids: [UUID] = []
        var conversations: [UUID] = []
        var since = Date.distantFuture
        var overviewWatched = false
        for stream in streams.values {
            switch stream.watch {
            case .job(let id): ids.append(id)
            case .conversation(let id):
                conversations.append(id)
                since = min(since, stream.since)
            case .overview: overviewWatched = true
            }
        }
        var jobs: [Job] = []
        var readAt: Date?
        var positions: [UUID: QueuePosition] = [:]
        var overview: QueueOverview?
        do {
            if !ids.isEmpty || !conversations.isEmpty {
                let read = try await queue.watched(ids: ids, groupIDs: conversations, finishedSince: since)
                jobs = read.jobs
                readAt = read.readAt
                positions = try await queue.positions(positioned(jobs, watchedIDs: Set(ids)))
            }
            if overviewWatched {
                overview = try await queue.overview()
                readAt = readAt ?? overview?.readAt
            }
        } catch {
            logger.warning("event feed read failed; retrying next tick", metadata: ["error": "\(error)"])
            return
        }
        let now = ContinuousClock.now
        let at = readAt ?? Date()
        for (key, var stream) in streams {
            if case .overview = stream.watch {
                // Sent when a figure changed (not merely the time of the read), and in place of
                // a keep-alive, so that the ages it shows never lag by more than that.
                // (A stream of the overview means it was read: a failed read returned above.)
                if let overview, !overview.sameFigures(as: stream.sentOverview) || now - stream.lastSent >= keepAlive {
                    stream.continuation.yield(FeedUpdate(at: at, jobs: [], overview: overview))
                    stream.sentOverview = overview
                    stream.lastSent = now
                }
                streams[key] = stream
                continue
            }
            let mine = jobs.filter { job in
                switch stream.watch {
                case .job(let id): return job.id == id
                case .conversation(let id): return job.groupID == id && (job.finishedAt.map { $0 > stream.since } ?? true)
                case .overview: return false
                }
            }
            var changed: [JobState] = []
            var sent: [UUID: JobState] = [:]
            for job in mine {
                let state = JobState(job: job, position: positions[job.id])
                if state.differs(from: stream.sent[job.id]) { changed.append(state) }
                sent[job.id] = state
            }
            stream.sent = sent
            if !changed.isEmpty || now - stream.lastSent >= keepAlive {
                stream.continuation.yield(FeedUpdate(at: at, jobs: changed))
                stream.lastSent = now
            }
            streams[key] = stream
        }
    }
}

extension JobFeed {
    /// A Server-Sent Events response that follows `watch`: `events` turns each update into the
    /// text to send (nothing: a keep-alive comment is sent instead) and says whether the stream
    /// is done. The stream also ends when the server shuts down, which would otherwise wait for
    /// it forever.
    nonisolated func eventStream(
        _ watch: Watch, since: Date?, _ events: @escaping @Sendable (FeedUpdate) throws -> (text: String, done: Bool)
    ) -> Response {
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-store", .init("X-Accel-Buffering")!: "no"]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            let (token, updates) = await self.subscribe(watch, since: since)
            do {
                try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
                try await withGracefulShutdownHandler {
                    for await update in updates {
                        let (text, done) = try events(update)
                        try await writer.write(ByteBuffer(string: text.isEmpty ? ": keep-alive\n\n" : text))
                        if done { break }
                    }
                } onGracefulShutdown: {
                    Task { await self.unsubscribe(token) }
                }
            } catch {
                await self.unsubscribe(token)
                throw error
            }
            await self.unsubscribe(token)
            try await writer.finish(nil)
        })
    }
}

extension QueueOverview {
    /// Whether `other` shows the same figures and jobs, whenever it was read.
    func sameFigures(as other: QueueOverview?) -> Bool {
        guard var other else { return false }
        other.readAt = readAt
        return self == other
    }
}
