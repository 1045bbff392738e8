import Foundation
import Logging
import Postgres

/// Where a limit applies: the whole queue (its default), one kind, or one group (all its kinds).
public enum LimitScope: Sendable, Equatable, Hashable {
    case queue
    case kind(String)
    case group(UUID)
}

/// At most `count` starts per `period` for a kind, fleet-wide.
public struct JobRate: Sendable, Equatable, Hashable {
    public var count: Int
    public var period: Duration

    public init(count: Int, period: Duration) {
        self.count = count
        self.period = period
    }
}

/// One scope's limits as stored; `nil` where the scope sets nothing (a broader scope's applies).
public struct ScopeLimits: Sendable, Equatable {
    public var scope: LimitScope
    /// At most this many of one group's jobs of a kind run at once (the narrowest scope that
    /// sets it wins: group, then kind, then queue).
    public var perGroup: Int?
    /// Starts of the kind per period (kinds only).
    public var rate: JobRate?
    /// A larger (or smaller) share of turns: a group's or kind's jobs are tagged `turn / weight`
    /// apart, so weight 2 gets two turns for every one of weight 1.
    public var weight: Double?

    /// The caps allowed.
    public static let perGroupRange = 1...100_000

    public init(scope: LimitScope, perGroup: Int? = nil, rate: JobRate? = nil, weight: Double? = nil) {
        self.scope = scope
        self.perGroup = perGroup
        self.rate = rate
        self.weight = weight
    }
}

/// A change to one setting: keep it, remove it, or set it.
public enum LimitChange<Value: Sendable & Equatable>: Sendable, Equatable {
    case keep
    case remove
    case set(Value)

    /// Whether it changes the setting (sets or removes it).
    public var isChange: Bool { if case .keep = self { false } else { true } }
    var value: Value? { if case .set(let v) = self { v } else { nil } }
}

/// How the queue schedules: fair share on or off, limits, pauses.
public struct SchedulingSettings: Sendable, Equatable {
    /// Groups take turns within a priority (on by default); off is strict oldest-first.
    public var fairShare: Bool
    /// The virtual time of one turn.
    public var turn: Duration
    public var limits: [ScopeLimits]
    /// Paused kinds; `*` is the whole queue.
    public var paused: [String]
}

/// The kinds `*` stands for: every kind, in pauses.
public let allKinds = "*"

extension JobQueue {
    /// Sets (or removes) one scope's limits; settings not named are kept. Setting a cap or a
    /// rate sends the scope's claimable jobs back to the admitter, so the limit holds for jobs
    /// already queued too (jobs already running finish; a cap lowered below them takes effect
    /// as they do).
    /// - Throws: `.invalidInput` naming the setting and what is allowed; nothing changes then.
    public func setLimits(
        _ scope: LimitScope, perGroup: LimitChange<Int> = .keep, rate: LimitChange<JobRate> = .keep,
        weight: LimitChange<Double> = .keep
    ) async throws {
        if case .kind(let kind) = scope { try Self.checkKind(kind) }
        if let cap = perGroup.value, !ScopeLimits.perGroupRange.contains(cap) {
            throw JobQueueError(.invalidInput, "per_group must be 1–100000 running jobs, got \(cap)", field: "per_group")
        }
        if rate.isChange, case .kind = scope {} else if rate.isChange {
            throw JobQueueError(.invalidInput, "a rate limit belongs to a kind: name one", field: "rate")
        }
        if let r = rate.value {
            if !(1...1_000_000).contains(r.count) {
                throw JobQueueError(.invalidInput, "rate must allow 1–1000000 starts per period, got \(r.count)", field: "rate")
            }
            if r.period < .seconds(1) || r.period > .seconds(86_400) {
                throw JobQueueError(.invalidInput, "rate period must be between 1 second and 1 day", field: "rate")
            }
        }
        if let w = weight.value, !(w >= 0.01 && w <= 100) {
            throw JobQueueError(.invalidInput, "weight must be between 0.01 and 100", field: "weight")
        }
        if case .queue = scope, weight.isChange {
            throw JobQueueError(.invalidInput, "a weight belongs to a kind or a group: name one", field: "weight")
        }
        let (kind, group): (String?, UUID?) = switch scope {
        case .queue: (nil, nil)
        case .kind(let k): (k, nil)
        case .group(let g): (nil, g)
        }
        do {
            try await pool.withTransaction { conn in
                try await conn.query(
                    SchedulingSQL.setLimits(
                        kind: kind, groupID: group, setsCap: perGroup.isChange, cap: perGroup.value, setsRate: rate.isChange,
                        rateCount: rate.value?.count, ratePeriodMs: rate.value?.period.milliseconds, setsWeight: weight.isChange,
                        weight: weight.value))
                try await conn.query(SchedulingSQL.deleteEmptyLimits())
            }
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// Fair share, limits and pauses as they stand.
    public func schedulingSettings() async throws -> SchedulingSettings {
        do {
            let s = try await pool.query(SchedulingSQL.settings())[0]
            let limits = try await pool.query(SchedulingSQL.limits()).map { row -> ScopeLimits in
                let kind: String? = try row.decode("kind")
                let group: UUID? = try row.decode("group_id")
                let count: Int? = try row.decode("rate_count")
                let periodMs: Int64? = try row.decode("rate_period_ms")
                return ScopeLimits(
                    scope: kind.map(LimitScope.kind) ?? group.map(LimitScope.group) ?? .queue, perGroup: try row.decode("per_group"),
                    rate: count.flatMap { c in periodMs.map { JobRate(count: c, period: .milliseconds($0)) } },
                    weight: try row.decode("weight"))
            }
            return SchedulingSettings(
                fairShare: try s.decode("fair_share"), turn: .milliseconds(try s.decode("turn_ms", as: Int64.self)), limits: limits,
                paused: try s.decode("paused"))
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// Turns fair share on (groups take turns within a priority) or off (strict oldest-first)
    /// for jobs that become claimable from now on; jobs already queued keep their places.
    public func setFairShare(_ on: Bool) async throws {
        do { try await pool.query(SchedulingSQL.setFairShare(on)) } catch { throw JobQueueError.from(error) }
    }

    /// Pauses a kind, or with `nil` the whole queue, fleet-wide: every worker hears of it (by
    /// NOTIFY, or with LISTEN off from its next claim) and starts no job of it from then on;
    /// a job a claim took in that instant is handed back unstarted. Running jobs finish;
    /// paused jobs keep their places.
    /// - Returns: whether it was running before (false when already paused).
    @discardableResult
    public func pause(kind: String? = nil) async throws -> Bool {
        if let kind { try Self.checkKind(kind) }
        do {
            return try await !pool.query(SchedulingSQL.pause(kind: kind ?? allKinds, channel: channel())).isEmpty
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// Resumes a kind, or with `nil` lifts every pause (the queue-wide one and each kind's).
    /// - Returns: how many pauses were lifted.
    @discardableResult
    public func resume(kind: String? = nil) async throws -> Int {
        if let kind { try Self.checkKind(kind) }
        do {
            return try await pool.query(SchedulingSQL.resume(kind: kind, channel: channel()))[0].decode("resumed")
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// Waits until the batch records that its last job finished, and returns its progress.
    /// Woken by the batch's NOTIFY; also looks every `poll` in case a notification was missed.
    /// - Throws: `.notFound` for an unknown batch; `CancellationError` when the task is cancelled.
    public func waitForBatch(_ id: UUID, poll: Duration = .seconds(1)) async throws -> BatchProgress {
        let listener = PGListener(configuration: pool.configuration, channels: [try await channel() + ".batches"], logger: Logger(label: "imagejobs.batch-wait"))
        defer { listener.stop() }
        let wake = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let relay = Task {
            for await event in listener {
                if case .notification(_, let payload) = event, payload != id.lowercasedString { continue }
                wake.continuation.yield()
            }
        }
        defer { relay.cancel() }
        var ticks = wake.stream.makeAsyncIterator()
        while true {
            let progress = try await batch(id)
            if progress.finishedAt != nil { return progress }
            try Task.checkCancellation()
            let timer = Task { try await Task.sleep(for: poll); wake.continuation.yield() }
            _ = await ticks.next()
            timer.cancel()
        }
    }
}
