import Foundation
import ImageJobs
import JobEngine
import Postgres
import TestSupport
import Testing

/// `submit_job` and `submit_jobs` (migration 0012): the same rules as the Swift path, through
/// every client, in the caller's transaction.
@Suite("enqueue from SQL: submit_job and submit_jobs", .enabled(if: TestDatabase.isConfigured))
struct SubmitJobTests {
    static let conversation = "0b7e2c4e-8a51-4d2a-9f3e-2b1c0d9e8f7a"

    /// One item with `changes` applied to a valid one (`nil` removes a key).
    static func item(_ changes: [String: JSONValue?] = [:]) -> String {
        var o: [String: JSONValue] = ["conversation_id": .string(conversation), "prompt": "a lighthouse at dusk"]
        for (key, value) in changes { o[key] = value }
        return JSONValue.object(o).jsonText
    }

    /// Items the submit path refuses, and the field each error must name.
    static let badItems: [(item: String, field: String?)] = [
        (item(["prompt": ""]), "prompt"),
        (item(["prompt": "   \n"]), "prompt"),
        (item(["prompt": .string(String(repeating: "x", count: 4001))]), "prompt"),
        (item(["prompt": .string(String(repeating: "é", count: 4001))]), "prompt"),
        (item(["prompt": "bell \u{07} ringing"]), "prompt"),
        (item(["prompt": 5]), "prompt"),
        (item(["prompt": nil]), "prompt"),
        (item(["negative_prompt": .string(String(repeating: "n", count: 4001))]), "negative_prompt"),
        (item(["negative_prompt": "tab\tis fine but not \u{1b}"]), "negative_prompt"),
        (item(["width": 100]), "width"),
        (item(["width": 0]), "width"),
        (item(["width": "wide"]), "width"),
        (item(["width": 512.5]), "width"),
        (item(["height": 4096]), "height"),
        (item(["height": 2056]), "height"),
        (item(["steps": 0]), "steps"),
        (item(["steps": 151]), "steps"),
        (item(["seed": 4_294_967_296]), "seed"),
        (item(["seed": -1]), "seed"),
        (item(["model": "two words"]), "model"),
        (item(["model": "-leading-dash"]), "model"),
        (item(["model": .string(String(repeating: "m", count: 101))]), "model"),
        (item(["priority": "urgent"]), "priority"),
        (item(["priority": 1]), "priority"),
        (item(["timeout": 0]), "timeout"),
        (item(["timeout": 0.5]), "timeout"),
        (item(["timeout": 86401]), "timeout"),
        (item(["timeout": -5]), "timeout"),
        (item(["timeout": "10"]), "timeout"),
        (item(["max_retries": 26]), "max_retries"),
        (item(["max_retries": -1]), "max_retries"),
        (item(["idempotency_key": .string(String(repeating: "k", count: 201))]), "idempotency_key"),
        (item(["idempotency_key": ""]), "idempotency_key"),
        (item(["conversation_id": "not-a-uuid"]), "conversation_id"),
        (item(["conversation_id": "0b7e2c4e8a514d2a9f3e2b1c0d9e8f7a"]), "conversation_id"),
        (item(["conversation_id": nil]), "conversation_id"),
        (item(["colour": "red"]), "colour"),
        ("[]", nil),
        ("\"a fox\"", nil),
    ]

    /// What the Swift path says of an item: nil when it is accepted.
    func swiftVerdict(_ text: String, queue: JobQueue) async -> JobQueueError? {
        do {
            _ = try await queue.submit(try ImageJob.spec(item: try JSONValue.parse(text)))
            return nil
        } catch let error as JobQueueError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    /// What `submit_job` says of an item: nil when it is accepted.
    func sqlVerdict(_ text: String, pool: PGPool) async -> PGError? {
        do {
            _ = try await pool.query("SELECT submit_job(\(text)::jsonb) AS id")
            return nil
        } catch let error as PGError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test("the bad-input matrix gets the same verdict, field and message from submit_job as from the Swift path, and writes nothing")
    func badInputMatrix() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            for (text, field) in Self.badItems {
                let swift = await swiftVerdict(text, queue: queue)
                let sql = await sqlVerdict(text, pool: schema.pool)
                let shown = text.prefix(80)
                #expect(swift?.field == field, "Swift path, \(shown): \(String(describing: swift))")
                #expect(sql?.sqlState == .invalidParameterValue, "submit_job, \(shown): \(String(describing: sql))")
                #expect((sql?.column).flatMap { $0.isEmpty ? nil : $0 } == field, "submit_job, \(shown): column \(String(describing: sql?.column))")
                #expect(sql?.message == swift?.description, "\(shown)")
                #expect(sql?.message.contains(String(repeating: "x", count: 100)) != true, "a message never carries the prompt")
            }
            let written = try await schema.pool.int("SELECT count(*) FROM jobs")
            let counted = try await schema.pool.int("SELECT coalesce(sum(n), 0) FROM job_count_deltas")
            #expect(written == 0 && counted == 0)
        }
    }

    @Test("batches: the bad item's index and field, the same from submit_jobs as from the Swift path; nothing written")
    func badBatchMatrix() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let other = UUID().lowercasedString
            let batches: [(items: [String], index: Int?, field: String)] = [
                ([], nil, "jobs"),
                ([Self.item(), Self.item(["width": 9])], 1, "width"),
                ([Self.item(), Self.item(["conversation_id": .string(other)])], 1, "conversation_id"),
                ([Self.item(["idempotency_key": "a"]), Self.item(["idempotency_key": "a"])], 1, "idempotency_key"),
            ]
            for (items, index, field) in batches {
                let array = "[" + items.joined(separator: ",") + "]"
                var swift: JobQueueError?
                do {
                    let (specs, conversationID) = try ImageJob.batch(items: try items.map { try JSONValue.parse($0) })
                    _ = try await queue.submitBatch(specs, groupID: conversationID)
                } catch let error as JobQueueError {
                    swift = error
                }
                var sql: PGError?
                do {
                    _ = try await schema.pool.query("SELECT * FROM submit_jobs(\(array)::jsonb)")
                } catch let error as PGError {
                    sql = error
                }
                #expect(swift?.index == index && swift?.field == field, "\(String(describing: swift))")
                #expect(sql?.column == field, "\(String(describing: sql))")
                #expect(sql?.message == swift?.description)
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") + (try await schema.pool.int("SELECT count(*) FROM batches")) == 0)
        }
    }

    @Test("a valid item makes the same job through submit_job as through the Swift path; positions count it")
    func sameJobBothWays() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let full = Self.item([
                "conversation_id": .string(Self.conversation.uppercased()), "negative_prompt": "blur", "width": 768, "height": 512,
                "steps": 20, "seed": 42, "model": "sdxl-1.0", "priority": "high", "timeout": 12.5, "max_retries": 5,
                "idempotency_key": "same-key",
            ])
            for text in [Self.item(), full] {
                let viaSwift = try await queue.submit(try ImageJob.spec(item: try JSONValue.parse(text))).job.id
                let viaSQL: UUID = try await schema.pool.scalar("SELECT submit_job(\(text.replacingOccurrences(of: "same-key", with: "other-key"))::jsonb)")
                let rows = try await schema.pool.query("""
                    SELECT group_id, kind, params, priority::text AS priority, max_retries, extract(epoch FROM timeout)::float8 AS timeout,
                           idempotency_key IS NOT NULL AS keyed
                    FROM jobs WHERE id IN (\(viaSwift), \(viaSQL)) ORDER BY id = \(viaSwift)
                    """)
                #expect(rows.count == 2)
                for column in ["group_id", "kind", "params", "priority", "max_retries", "timeout", "keyed"] {
                    #expect(try rows[0].decode(column, as: String.self) == (try rows[1].decode(column, as: String.self)), "\(column)")
                }
                let position = try await queue.position(viaSQL)
                let truth = try await queue.positionByCounting(viaSQL)
                #expect(position.position == truth.position)
            }
            // The same idempotency key in the conversation returns the first job and writes nothing.
            let keyed = Self.item(["idempotency_key": "again"])
            let first: UUID = try await schema.pool.scalar("SELECT submit_job(\(keyed)::jsonb)")
            let second: UUID = try await schema.pool.scalar("SELECT submit_job(\(keyed)::jsonb)")
            #expect(first == second)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE idempotency_key = 'again'") == 1)
        }
    }

    @Test("other kinds: kind, group_id and params; the caller's rollback leaves no job and no position change")
    func genericKindsAndRollback() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let group = UUID().lowercasedString
            let mail = #"{"kind":"mail.send","group_id":"\#(group)","params":{"to":"a@example.com"},"priority":"low"}"#
            let id: UUID = try await schema.pool.scalar("SELECT submit_job(\(mail)::jsonb)")
            let job = try await queue.job(id)
            #expect(job.kind == "mail.send" && job.params["to"] == "a@example.com" && job.priority == .low)
            #expect(job.groupID.lowercasedString == group)
            let wrong = await sqlVerdict(#"{"kind":"mail.send","group_id":"\#(group)","prompt":"x"}"#, pool: schema.pool)
            #expect(wrong?.column == "prompt" && wrong?.message.contains("allowed: group_id") == true)
            let badKind = await sqlVerdict(#"{"kind":"Mail","group_id":"\#(group)"}"#, pool: schema.pool)
            #expect(badKind?.column == "kind")

            let before = try await schema.pool.int("SELECT coalesce(sum(n), 0) FROM job_count_deltas")
            struct Rollback: Error {}
            await #expect(throws: PGTransactionError.self) {
                try await schema.pool.withTransaction { connection in
                    _ = try await connection.query("SELECT submit_job(\(Self.item())::jsonb)")
                    _ = try await connection.query("SELECT * FROM submit_jobs(\("[\(Self.item()),\(Self.item())]")::jsonb)")
                    throw Rollback()
                }
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 1)
            #expect(try await schema.pool.int("SELECT coalesce(sum(n), 0) FROM job_count_deltas") == before)
        }
    }

    @Test("psql as imagejobs_client: a rolled-back submit leaves nothing and wakes nobody; a committed one is queued and NOTIFYs at commit")
    func fromPsql() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let channel = try await queue.channel()
            let listener = PGListener(configuration: schema.configuration, channels: [channel], logger: TestLog.quiet)
            defer { listener.stop() }
            var events = listener.makeAsyncIterator()
            guard await events.next() == .connected else { Issue.record("the listener did not start"); return }

            let script = """
                \\set ON_ERROR_STOP on
                SET ROLE imagejobs_client;
                BEGIN;
                SELECT submit_job('\(Self.item(["prompt": "rolled back"]))');
                ROLLBACK;
                SELECT submit_job('\(Self.item(["prompt": "committed"]))') AS id \\gset
                SELECT * FROM submit_jobs('[\(Self.item(["prompt": "one"])), \(Self.item(["prompt": "two"]))]') \\gset
                \\echo ids :id :batch_id
                """
            let result = try await runProcess("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", schema.connectionString], stdin: script)
            #expect(result.status == 0, "\(result.stderr)")
            let idsLine = result.stdout.split(separator: "\n").last { $0.hasPrefix("ids ") } ?? ""
            let printed = idsLine.split(separator: " ").dropFirst().map { UUID(uuidString: String($0)) }
            let id = try #require(printed.first ?? nil)
            let batchID = try #require(printed.last ?? nil)
            #expect(try await queue.job(id).params["prompt"] == "committed")
            #expect(try await queue.batch(batchID).total == 2)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE params->>'prompt' = 'rolled back'") == 0)
            // Notifications arrive in commit order: the first is the committed job's, the
            // rolled-back submit sent none.
            let first = await events.next()
            #expect(first == .notification(channel: channel, payload: "job"))

            let refused = try await runProcess(
                "psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", schema.connectionString],
                stdin: "SET ROLE imagejobs_client;\nSELECT submit_job('\(Self.item(["width": 100]))');")
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("width must be 64–2048 in steps of 8, got 100"), "\(refused.stderr)")
        }
    }

    @Test("psycopg (a client from PyPI): enqueue in the app's own transaction with a row of its own; bad input names the field")
    func fromPsycopg() async throws {
        guard let python = ProcessInfo.processInfo.environment["IMAGEJOBS_PYTHON"] else {
            Issue.record("IMAGEJOBS_PYTHON (a Python with psycopg, set by make test) is not set")
            return
        }
        try await TestDatabase.withMigratedSchema { schema, queue in
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Clients/submit_job_psycopg.py")
            let result = try await runProcess(python, [script.path, schema.connectionString, Self.conversation])
            #expect(result.status == 0, "\(result.stderr)")
            let report = try JSONValue.parse(result.stdout)
            let committed = try #require(report["committed"]?.stringValue.flatMap(UUID.init(uuidString:)))
            let rolledBack = try #require(report["rolled_back"]?.stringValue.flatMap(UUID.init(uuidString:)))
            #expect(try await queue.job(committed).status == .pending)
            await #expect(throws: JobQueueError.self) { try await queue.job(rolledBack) }
            #expect(report["message_row"] == "committed with its job")
            #expect(report["error_column"] == "width")
            #expect(report["error_message"] == "width must be 64–2048 in steps of 8, got 100")
            #expect(report["batch_jobs"] == 3)
        }
    }
}

