import Foundation

/// Wakes idle workers after submits that committed on their own (not in a caller's
/// transaction): one NOTIFY, sent after the commit in a transaction of its own that does not
/// wait for its commit record to reach disk.
///
/// Why not in the submits' own statements: PostgreSQL holds one database-wide lock from a
/// notifying transaction's commit until its commit is flushed, so transactions that notify
/// commit one at a time, each waiting out its own flush (pgbench here: 6,957 inserts a second
/// from 16 clients, 2,610 when each also notifies). Sent apart, the submits' commits share
/// their flushes again. A signal that arrives while a NOTIFY is being sent is answered by one
/// more after it, so a burst costs two.
final class WakeUps: @unchecked Sendable {
    private let lock = NSLock()
    private var sending = false
    private var again = false

    /// Asks for a NOTIFY; `send` sends one (its failure only delays a wake-up: workers poll).
    func signal(_ send: @escaping @Sendable () async -> Void) {
        let start = lock.withLock {
            if sending { again = true }
            defer { sending = true }
            return !sending
        }
        guard start else { return }
        Task {
            repeat {
                await send()
            } while lock.withLock {
                if again {
                    again = false
                    return true
                }
                sending = false
                return false
            }
        }
    }
}
