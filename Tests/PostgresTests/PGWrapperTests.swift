import Foundation
import Postgres
import TestSupport
import Testing

@Suite("libpq wrapper against a real server", .enabled(if: TestDatabase.isConfigured))
struct PGWrapperTests {
    @Test("hostile strings and binary data round-trip byte for byte through binds")
    func bindsRoundTrip() async throws {
        try await TestDatabase.withSchema { schema in
            let strings = [
                "'; DROP TABLE jobs;--", "$1", "\\'\\\"", "back\\slash\\\\", "“unicode” quotes ‘’ 🎨 ẞ 中文",
                "%s%n%x", String(repeating: "'\"", count: 5000), "", " leading and trailing ", "line\nbreak\ttab",
            ]
            for s in strings {
                let row = try #require(try await schema.pool.query("SELECT \(s)::text AS v, length(\(s)::text) AS n").singleRow())
                #expect(try row.decode("v", as: String.self) == s)
                #expect(try row.decode("n", as: Int.self) == s.count)
            }
            var bytes: [UInt8] = Array(0...255)
            bytes += bytes.reversed()
            let data = Data(bytes)
            let row = try #require(try await schema.pool.query("SELECT \(data)::bytea AS b, octet_length(\(data)::bytea) AS n").singleRow())
            #expect(try row.decode("b", as: Data.self) == data)
            #expect(try row.decode("n", as: Int.self) == 512)
        }
    }

    @Test("a pool counts the statements its connections sent, also after it closed them")
    func statementsCounted() async throws {
        try await TestDatabase.withSchema { schema in
            let pool = schema.makePool(maxConnections: 2)
            #expect(await pool.statementsSent == 0)
            for i in 0..<5 { _ = try await pool.query("SELECT \(i)::int AS i") }
            try await pool.withTransaction { connection in _ = try await connection.query("SELECT 1 AS one") }
            let open = await pool.statementsSent
            #expect(open == 8, "\(open)")  // five queries; the transaction: BEGIN, its statement, COMMIT
            await pool.close()
            #expect(await pool.statementsSent == open)
        }
    }

    @Test("typed decoding: integers, Bool, Double, UUID, Date, JSON, arrays and NULL")
    func typedDecoding() async throws {
        try await TestDatabase.withSchema { schema in
            let id = UUID()
            let date = Date(timeIntervalSince1970: 1_764_579_114.123456)
            let ids = [UUID(), UUID()]
            struct Payload: Codable, Equatable, Sendable { var prompt: String; var steps: Int }
            let payload = Payload(prompt: "a \"quoted\" fox", steps: 30)
            let rows = try await schema.pool.query(
                """
                SELECT 42::int2 AS small, 2147483647::int4 AS mid, 9007199254740993::int8 AS big, true AS yes,
                       1.5::float8 AS ratio, \(id)::uuid AS id, \(date)::timestamptz AS at,
                       \(PGJSON(payload))::jsonb AS payload, \(ids)::uuid[] AS ids, ARRAY['a', NULL, 'c"d'] AS texts,
                       NULL::text AS nothing
                """)
            let row = try #require(try rows.singleRow())
            #expect(try row.decode("small", as: Int16.self) == 42)
            #expect(try row.decode("mid", as: Int32.self) == 2_147_483_647)
            #expect(try row.decode("big", as: Int64.self) == 9_007_199_254_740_993)
            #expect(try row.decode("yes", as: Bool.self))
            #expect(try row.decode("ratio", as: Double.self) == 1.5)
            #expect(try row.decode("id", as: UUID.self) == id)
            let decoded = try row.decode("at", as: Date.self)
            #expect(abs(decoded.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000001)
            #expect(try row.decodeJSON("payload", as: Payload.self) == payload)
            #expect(try row.decode("ids", as: [UUID].self) == ids)
            #expect(try row.decode("texts", as: [String?].self) == ["a", nil, "c\"d"])
            #expect(try row.decode("nothing", as: String?.self) == nil)
            #expect(row.isNull("nothing"))
        }
    }

    @Test("NULL into a non-optional and a wrong type are decoding errors naming the column")
    func decodingErrors() async throws {
        try await TestDatabase.withSchema { schema in
            let row = try #require(try await schema.pool.query("SELECT NULL::int AS missing, 'abc'::text AS word").singleRow())
            let nullError = try #require(throws: PGError.self) { try row.decode("missing", as: Int.self) }
            #expect(nullError.kind == .decoding)
            #expect(nullError.column == "missing")
            #expect(nullError.description.contains("missing"))
            let typeError = try #require(throws: PGError.self) { try row.decode("word", as: Int.self) }
            #expect(typeError.kind == .decoding)
            #expect(typeError.description.contains("word"))
            #expect(typeError.description.contains("text"))
            let noColumn = try #require(throws: PGError.self) { try row.decode("nope", as: Int.self) }
            #expect(noColumn.description.contains("nope"))
        }
    }

    @Test("a unique violation surfaces as 23505 with its constraint name")
    func uniqueViolation() async throws {
        try await TestDatabase.withSchema { schema in
            try await schema.pool.query("CREATE TABLE items (key text CONSTRAINT items_key_unique UNIQUE)")
            try await schema.pool.query("INSERT INTO items VALUES (\("k"))")
            let error = await #expect(throws: PGError.self) {
                try await schema.pool.query(("INSERT INTO items VALUES (\("k"))" as PGQuery).named("insertItem"))
            }
            #expect(error?.sqlState == .uniqueViolation)
            #expect(error?.constraint == "items_key_unique")
            #expect(error?.queryName == "insertItem")
            #expect(error?.description.contains("items_key_unique") == true)
            #expect(error?.description.contains("insertItem") == true)
        }
    }

    @Test("a statement over statement_timeout surfaces as 57014")
    func statementTimeout() async throws {
        try await TestDatabase.withSchema { schema in
            var configuration = schema.configuration
            configuration.statementTimeout = .milliseconds(300)
            let pool = PGPool(configuration: configuration, logger: TestLog.quiet)
            let start = ContinuousClock.now
            let error = await #expect(throws: PGError.self) { try await pool.query("SELECT pg_sleep(5)") }
            let elapsed = ContinuousClock.now - start
            #expect(error?.sqlState == .queryCanceled)
            #expect(error?.isTransient == true)
            // Stopped by the server's timeout, well before the statement's own 5 s.
            #expect(elapsed < .seconds(4))
            // The connection is still good afterwards.
            let one = try await pool.query("SELECT 1 AS one")[0].decode("one", as: Int.self)
            #expect(one == 1)
            await pool.close()
        }
    }

    @Test("SET LOCAL statement_timeout applies inside a transaction only")
    func setLocalStatementTimeout() async throws {
        try await TestDatabase.withSchema { schema in
            let inside: String = try await schema.pool.withTransaction { conn in
                try await conn.setLocalStatementTimeout(.milliseconds(1500))
                return try #require(try await conn.query("SHOW statement_timeout").singleRow()).decode(0, as: String.self)
            }
            #expect(inside == "1500ms")
            let after = try #require(try await schema.pool.query("SHOW statement_timeout").singleRow()).decode(0, as: String.self)
            #expect(after == "20s")
        }
    }

    @Test("cancelling the awaiting task cancels pg_sleep(30) on the server")
    func taskCancellation() async throws {
        try await TestDatabase.withSchema { schema in
            let pool = schema.makePool(applicationName: "cancel-test-\(schema.name)")
            let task = Task { try await pool.query("SELECT pg_sleep(30)") }
            // Wait until the statement is running on the server.
            let observer = schema.makePool(maxConnections: 1)
            var running = false
            for _ in 0..<200 where !running {
                let rows = try await observer.query(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = \("cancel-test-\(schema.name)") AND query LIKE 'SELECT pg_sleep%' AND state = 'active'")
                running = try rows[0].decode("n", as: Int.self) == 1
                if !running { try await Task.sleep(for: .milliseconds(25)) }
            }
            #expect(running)
            let start = ContinuousClock.now
            task.cancel()
            let result = await task.result
            let elapsed = ContinuousClock.now - start
            guard case .failure(let error) = result, let pgError = error as? PGError else {
                Issue.record("the cancelled query did not fail with PGError")
                return
            }
            #expect(pgError.kind == .cancelled)
            #expect(elapsed < .seconds(5))
            let still = try await observer.query(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = \("cancel-test-\(schema.name)") AND state = 'active'")
            #expect(try still[0].decode("n", as: Int.self) == 0)
            await pool.close()
            await observer.close()
        }
    }

    @Test("a transaction whose body throws rolls back and names the phase")
    func rollbackOnThrow() async throws {
        struct Boom: Error {}
        try await TestDatabase.withSchema { schema in
            try await schema.pool.query("CREATE TABLE t (v int)")
            let error = await #expect(throws: PGTransactionError.self) {
                try await schema.pool.withTransaction { conn in
                    try await conn.query("INSERT INTO t VALUES (\(1))")
                    throw Boom()
                }
            }
            #expect(error?.phase == .body)
            #expect(error?.underlying is Boom)
            let count = try await schema.pool.query("SELECT count(*) AS n FROM t")[0].decode("n", as: Int.self)
            #expect(count == 0)
            _ = try await schema.pool.withTransaction { conn in
                try await conn.execute("INSERT INTO t VALUES (\(2))")
            }
            #expect(try await schema.pool.query("SELECT count(*) AS n FROM t")[0].decode("n", as: Int.self) == 1)
            // A failed commit names the commit phase (a deferred constraint fails there).
            try await schema.pool.query(
                "CREATE TABLE d (v int CONSTRAINT d_unique UNIQUE DEFERRABLE INITIALLY DEFERRED)")
            let commitError = await #expect(throws: PGTransactionError.self) {
                try await schema.pool.withTransaction { conn in
                    try await conn.query("INSERT INTO d VALUES (\(1)), (\(1))")
                }
            }
            #expect(commitError?.phase == .commit)
        }
    }

    @Test("LISTEN receives NOTIFY and keeps receiving after its backend is terminated")
    func listenSurvivesTermination() async throws {
        try await TestDatabase.withSchema { schema in
            let channel = "\(schema.name)_wake"
            let listener = PGListener(
                configuration: schema.configuration, channels: [channel], pollInterval: .milliseconds(50),
                maxBackoff: .milliseconds(200), logger: TestLog.quiet)
            var iterator = listener.makeAsyncIterator()
            #expect(await iterator.next() == .connected)
            try await schema.pool.query("SELECT pg_notify(\(channel), \("first"))")
            #expect(await iterator.next() == .notification(channel: channel, payload: "first"))

            let pid = listener.backendPID
            #expect(pid != 0)
            try await schema.pool.query("SELECT pg_terminate_backend(\(Int(pid)))")
            #expect(await iterator.next() == .connected)
            #expect(listener.reconnects == 1)
            #expect(listener.backendPID != pid)
            try await schema.pool.query("SELECT pg_notify(\(channel), \("second"))")
            #expect(await iterator.next() == .notification(channel: channel, payload: "second"))
            listener.stop()
        }
    }

    @Test("the pool replaces connections whose backends were terminated")
    func poolRecovers() async throws {
        try await TestDatabase.withSchema { schema in
            let app = "recover-\(schema.name)"
            let pool = schema.makePool(maxConnections: 2, applicationName: app)
            async let a = pool.query("SELECT pg_backend_pid() AS pid")
            async let b = pool.query("SELECT pg_backend_pid() AS pid")
            _ = try await (a, b)
            #expect(await pool.openConnections >= 1)
            let observer = schema.makePool(maxConnections: 1)
            try await observer.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = \(app)")
            // Every later statement works: broken connections are dropped and replaced.
            var ok = 0
            for _ in 0..<5 {
                do {
                    _ = try await pool.query("SELECT 1")
                    ok += 1
                } catch let error as PGError {
                    // At most the first use of each terminated connection may fail.
                    #expect(error.invalidatesConnection)
                }
            }
            #expect(ok >= 3)
            #expect(try await pool.query("SELECT 1 AS one")[0].decode("one", as: Int.self) == 1)
            await pool.close()
            await observer.close()
        }
    }

    @Test("an unreachable database fails fast with a clear error")
    func unreachable() async throws {
        var configuration = PGConfiguration(connectionString: "postgresql://nobody@127.0.0.1:1/none")
        configuration.connectTimeoutSeconds = 2
        let pool = PGPool(configuration: configuration, logger: TestLog.quiet)
        let start = ContinuousClock.now
        let error = await #expect(throws: PGError.self) { try await pool.query("SELECT 1") }
        #expect(error?.kind == .connectionFailed)
        #expect(error?.isTransient == true)
        #expect(error?.description.contains("could not connect") == true)
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test("a NUL byte in a text parameter is refused before it is sent")
    func nulByteRefused() async throws {
        try await TestDatabase.withSchema { schema in
            let error = await #expect(throws: PGError.self) { try await schema.pool.query("SELECT \("a\u{0}b")::text") }
            #expect(error?.description.contains("NUL") == true)
        }
    }

    @Test("libpq runs on the connection's own thread, never on the cooperative pool")
    func ownThread() async throws {
        try await TestDatabase.withSchema { schema in
            // More concurrent sleeping statements than the cooperative pool has threads: if any
            // blocked a pool thread the others (and this task) would stall behind it.
            let pool = schema.makePool(maxConnections: 6)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<6 { group.addTask { try await pool.query("SELECT pg_sleep(0.3)") } }
                try await group.waitForAll()
            }
            #expect(await pool.openConnections == 6)
            await pool.close()
        }
    }
}
