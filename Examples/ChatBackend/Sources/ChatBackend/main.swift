// Run: DATABASE_URL=postgresql://… swift run --package-path Examples/ChatBackend
// Exits 0 once the job has answered the message, 1 if it has not within 30 s.
import Foundation
import JobEngine
import Logging
import Postgres

// 1. A typed job: its arguments and its kind.
struct ReplyToMessage: JobArguments {
    static let kind = "chat.reply"
    var messageID: Int64
    var language: String
}

var logger = Logger(label: "chat-backend")
logger.logLevel = .warning
let pool = PGPool(configuration: .resolve(explicit: nil), options: .init(maxConnections: 4), logger: logger)
try await Migrator(pool: pool, logger: logger).up()
try await pool.query("""
    CREATE TABLE IF NOT EXISTS chat_messages (
        id bigserial PRIMARY KEY, conversation uuid NOT NULL, body text NOT NULL, reply text, reply_job uuid)
    """)
let queue = JobQueue(pool: pool, logger: logger)

// 2. The app's message and its job commit together, or neither exists.
let conversation = UUID()
let (messageID, jobID) = try await pool.withTransaction { connection in
    let message: Int64 = try await connection.query("""
        INSERT INTO chat_messages (conversation, body) VALUES (\(conversation), 'Hello! Can you draw me a lighthouse?')
        RETURNING id
        """)[0].decode("id")
    let reply = ReplyToMessage(messageID: message, language: "en")
    let job = try await queue.submit(try JobSpec(reply, groupID: conversation), on: connection).job
    try await connection.query("UPDATE chat_messages SET reply_job = \(job.id) WHERE id = \(message)")
    return (message, job.id)
}

// 3. A worker with a custom handler; its write commits with the job's completion.
let handler = ClosureJobHandler(ReplyToMessage.self) { reply, job, context in
    context.logger.info("answering", metadata: ["message": "\(reply.messageID)"])
    let text = "Sure, here is your lighthouse (job \(job.job.id.lowercasedString), attempt \(job.job.attempt))."
    return JobResult(store: { connection in
        try await connection.query("UPDATE chat_messages SET reply = \(text) WHERE id = \(reply.messageID)")
    })
}
var configuration = WorkerConfiguration()
configuration.pollInterval = .milliseconds(200)
let worker = Worker(pool: pool, handlers: [handler], configuration: configuration, logger: logger)
let running = Task { try await worker.run() }

let deadline = ContinuousClock.now + .seconds(30)
var answered = false
while !answered && ContinuousClock.now < deadline {
    try await Task.sleep(for: .milliseconds(100))
    answered = try await queue.job(jobID).status == .completed
}
running.cancel()
_ = await running.result
let reply: String? = try await pool.query("SELECT reply FROM chat_messages WHERE id = \(messageID)")[0].decode("reply")
await pool.close()
guard answered, let reply else {
    print("message \(messageID): no reply within 30 s")
    exit(1)
}
print("message \(messageID) answered by job \(jobID.lowercasedString): \(reply)")
