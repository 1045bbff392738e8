import Foundation
import Postgres

/// Group commit for one-job submits: when many tasks submit at once, the ones that arrive while
/// earlier inserts are in flight wait together and go in as one statement and one commit. A
/// submit that finds a free slot and nobody waiting runs at once, on its own task, as it would
/// without grouping: no timer, so no added latency when alone. At most `slots` statements are
/// in flight; each group takes up to `maxGroup` waiting submits in arrival order.
///
/// Each submit still gets its own result: its id, its idempotency outcome, its own error (the
/// insert function answers per entry). Every submit is durable when it returns (its
/// statement committed).
final class SubmitGroups: @unchecked Sendable {
    typealias Outcome = Result<(job: Job, created: Bool), any Error>
    /// Inserts the entries (as one statement when it can): one outcome per entry, in order.
    typealias Insert = @Sendable ([PendingSubmit]) async -> [Outcome]

    private struct Waiting {
        let entry: PendingSubmit
        let continuation: CheckedContinuation<(job: Job, created: Bool), any Error>
    }

    private let lock = NSLock()
    private var waiting: [Waiting] = []
    private var inFlight = 0
    private let slots: Int
    private let maxGroup: Int

    init(slots: Int, maxGroup: Int = 1000) {
        self.slots = max(1, slots)
        self.maxGroup = maxGroup
    }

    func submit(_ entry: PendingSubmit, using insert: @escaping Insert) async throws -> (job: Job, created: Bool) {
        let alone = lock.withLock {
            guard waiting.isEmpty, inFlight < slots else { return false }
            inFlight += 1
            return true
        }
        if alone {
            let outcome = await insert([entry])[0]
            handOver(insert)
            return try outcome.get()
        }
        return try await withCheckedThrowingContinuation { continuation in
            let start = lock.withLock {
                waiting.append(Waiting(entry: entry, continuation: continuation))
                guard inFlight < slots else { return false }
                inFlight += 1
                return true
            }
            if start { Task { await self.drain(insert) } }
        }
    }

    /// A slot's holder is done: the slot goes to the submits that arrived meanwhile, or is freed.
    private func handOver(_ insert: @escaping Insert) {
        let more = lock.withLock {
            if waiting.isEmpty { inFlight -= 1 }
            return !waiting.isEmpty
        }
        if more { Task { await self.drain(insert) } }
    }

    /// Inserts waiting groups until none is left, then frees the slot.
    private func drain(_ insert: Insert) async {
        while true {
            let group: [Waiting] = lock.withLock {
                guard !waiting.isEmpty else {
                    inFlight -= 1
                    return []
                }
                let taken = Array(waiting.prefix(maxGroup))
                waiting.removeFirst(taken.count)
                return taken
            }
            if group.isEmpty { return }
            let outcomes = await insert(group.map(\.entry))
            for (waiter, outcome) in zip(group, outcomes) { waiter.continuation.resume(with: outcome) }
        }
    }
}

/// One validated submit waiting for its insert.
struct PendingSubmit: Sendable {
    let spec: JobSpec
    /// The parameters' JSON, written once by validation.
    let params: [UInt8]
    let id: UUID
    let traceContext: String?
}
