import ArgumentParser
import Foundation
import JobEngine

/// `imagejobs limits`: caps, rate limits, weights and fair share.
struct Limits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show or set caps, rate limits, weights and fair share.", subcommands: [Set.self, Show.self])

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set or remove limits of the queue, a kind (--kind) or a conversation (--conversation).",
            discussion: """
            --per-conversation caps how many jobs of one conversation (and kind) run at once, fleet-wide; the \
            narrowest scope that sets it wins (conversation, kind, queue). --rate N/PERIOD (PERIOD: s, m, h, d \
            or a number and a unit, e.g. 50/min, 10/s, 1000/1h) limits a kind's starts. --weight gives a kind or \
            conversation a larger share of turns. "none" removes a setting; settings not named are kept. \
            --fair-share off orders the whole queue strictly oldest-first within each priority.
            """)
        @OptionGroup var database: DatabaseOptions
        @Option(help: "The kind these limits apply to.") var kind: String?
        @Option(help: "The conversation these limits apply to (UUID).") var conversation: String?
        @Option(help: "Most running jobs of one conversation, or none.") var perConversation: String?
        @Option(help: "Most starts per period for the kind (e.g. 50/min), or none.") var rate: String?
        @Option(help: "Share of turns (0.01–100), or none.") var weight: String?
        @Option(help: "on or off: groups take turns within a priority, or strict oldest-first.") var fairShare: String?

        func validate() throws {
            if kind != nil && conversation != nil {
                throw ValidationError("a conversation's limits apply to all its kinds: give --kind or --conversation, not both")
            }
            if perConversation == nil && rate == nil && weight == nil && fairShare == nil {
                throw ValidationError("nothing to set: give --per-conversation, --rate, --weight or --fair-share")
            }
            if fairShare != nil && (kind != nil || conversation != nil) {
                throw ValidationError("--fair-share is queue-wide: leave out --kind and --conversation")
            }
        }

        func run() async throws {
            try await runCommand {
                let queue = try database.queue()
                let scope: LimitScope =
                    if let kind { .kind(kind) } else if let conversation { .group(try parseUUID(conversation, field: "conversation")) } else { .queue }
                let cap = try change(perConversation, "--per-conversation") { Int($0).flatMap { ScopeLimits.perGroupRange.contains($0) ? $0 : nil } }
                let rateChange = try change(rate, "--rate", parse: parseRate)
                let weightChange = try change(weight, "--weight") { Double($0) }
                var fair: Bool?
                if let fairShare {
                    guard let on = ["on": true, "off": false][fairShare.lowercased()] else {
                        throw CLIError.badInput("--fair-share must be on or off, got \"\(fairShare.prefix(20))\"")
                    }
                    fair = on
                }
                if cap.isChange || rateChange.isChange || weightChange.isChange {
                    try await queue.setLimits(scope, perGroup: cap, rate: rateChange, weight: weightChange)
                }
                if let fair { try await queue.setFairShare(fair) }
                print("limits set")
            }
        }

        private static let allowed = [
            "--per-conversation": "1–100000 running jobs", "--rate": "starts per period, like 50/min, 10/s or 1000/1h",
            "--weight": "a share of turns, 0.01–100",
        ]

        private func change<T>(_ text: String?, _ option: String, parse: (String) -> T?) throws -> LimitChange<T> {
            guard let text else { return .keep }
            if text.lowercased() == "none" { return .remove }
            guard let value = parse(text) else {
                throw CLIError.badInput("\(option): \"\(text.prefix(40))\" is not allowed; give \(Self.allowed[option] ?? "a value") or none")
            }
            return .set(value)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show fair share, limits and pauses.")
        @OptionGroup var database: DatabaseOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            try await runCommand {
                let s = try await database.queue().schedulingSettings()
                if json { return try printJSON(SettingsJSON(s)) }
                print("fair share: \(s.fairShare ? "on" : "off") (turn \(s.turn.milliseconds / 1000) s)")
                print("paused: \(s.paused.isEmpty ? "nothing" : s.paused.map { $0 == allKinds ? "every kind" : $0 }.joined(separator: ", "))")
                if s.limits.isEmpty { return print("limits: none") }
                print(table(["scope", "per_conversation", "rate", "weight"], s.limits.map { l in
                    [SettingsJSON.scopeName(l.scope), l.perGroup.map(String.init) ?? "-",
                     l.rate.map { "\($0.count)/\(Age.text($0.period))" } ?? "-", l.weight.map { "\($0)" } ?? "-"]
                }))
            }
        }
    }
}

/// `N/PERIOD`: 50/min, 10/s, 1000/1h, 5/30s.
func parseRate(_ text: String) -> JobRate? {
    let parts = text.lowercased().split(separator: "/", maxSplits: 1).map(String.init)
    guard parts.count == 2, let count = Int(parts[0]) else { return nil }
    let aliases = ["s": "1s", "sec": "1s", "second": "1s", "m": "1m", "min": "1m", "minute": "1m", "h": "1h", "hour": "1h", "d": "1d", "day": "1d"]
    guard let period = Age(argument: aliases[parts[1]] ?? parts[1]) else { return nil }
    return JobRate(count: count, period: period.duration)
}

extension Age {
    /// A duration the way `--rate` and `limits show` write it: 1m, 30s, 1h.
    static func text(_ d: Duration) -> String {
        let s = d.milliseconds / 1000
        if s % 86400 == 0 { return "\(s / 86400)d" }
        if s % 3600 == 0 { return "\(s / 3600)h" }
        if s % 60 == 0 { return "\(s / 60)m" }
        return "\(s)s"
    }
}

/// `limits show --json`.
struct SettingsJSON: Encodable {
    struct Limit: Encodable {
        var scope: String
        var kind: String?
        var conversation_id: String?
        var per_conversation: Int?
        var rate_count: Int?
        var rate_period_s: Double?
        var weight: Double?
    }
    var fair_share: Bool
    var turn_s: Double
    var paused: [String]
    var limits: [Limit]

    init(_ s: SchedulingSettings) {
        fair_share = s.fairShare
        turn_s = Double(s.turn.milliseconds) / 1000
        paused = s.paused
        limits = s.limits.map { l in
            var kind: String?
            var conversation: String?
            switch l.scope {
            case .queue: break
            case .kind(let k): kind = k
            case .group(let g): conversation = g.lowercasedString
            }
            return Limit(
                scope: Self.scopeName(l.scope).components(separatedBy: " ")[0], kind: kind, conversation_id: conversation,
                per_conversation: l.perGroup, rate_count: l.rate?.count, rate_period_s: l.rate.map { Double($0.period.milliseconds) / 1000 },
                weight: l.weight)
        }
    }

    static func scopeName(_ scope: LimitScope) -> String {
        switch scope {
        case .queue: "queue"
        case .kind(let k): "kind \(k)"
        case .group(let g): "conversation \(g.lowercasedString)"
        }
    }
}

/// `imagejobs pause [KIND]`.
struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pause a kind, or the whole queue, fleet-wide: no worker starts its jobs from its next claim on.",
        discussion: "Running jobs finish. Paused jobs keep their places; `imagejobs resume` lets them run.")
    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The kind to pause; without it, every kind.") var kind: String?

    func run() async throws {
        try await runCommand {
            let changed = try await database.queue().pause(kind: kind)
            let what = kind ?? "the whole queue"
            print(changed ? "paused \(what)" : "\(what) was already paused")
        }
    }
}

/// `imagejobs resume [KIND]`.
struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resume a paused kind, or without KIND lift every pause.")
    @OptionGroup var database: DatabaseOptions
    @Argument(help: "The kind to resume; without it, every pause is lifted.") var kind: String?

    func run() async throws {
        try await runCommand {
            let lifted = try await database.queue().resume(kind: kind)
            print(lifted == 0 ? "nothing was paused" : "resumed \(kind ?? "everything") (\(lifted) pause\(lifted == 1 ? "" : "s") lifted)")
        }
    }
}
