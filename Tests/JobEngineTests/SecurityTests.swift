import Foundation
import Postgres
import TestSupport
import Testing

@testable import JobEngine

@Suite("least privilege and SQL hygiene", .enabled(if: TestDatabase.isConfigured))
struct SecurityTests {
    /// Runs `sql` as `role` in a transaction that is rolled back; `true` unless refused with 42501.
    func allowed(_ pool: PGPool, role: String, _ sql: String) async throws -> Bool {
        try await pool.withConnection { conn in
            try await conn.query("BEGIN")
            try await conn.query("SET LOCAL ROLE \(identifier: role)")
            do {
                try await conn.query(PGQuery(unsafeSQL: sql))
                try await conn.query("ROLLBACK")
                return true
            } catch let error as PGError where error.sqlState == .insufficientPrivilege {
                try await conn.query("ROLLBACK")
                return false
            } catch {
                // Refused for another reason (a constraint, a bad value): the privilege was there.
                try await conn.query("ROLLBACK")
                return true
            }
        }
    }

    @Test("a statement the role may not run is the queue's not_permitted error, naming no value")
    func refusalIsNamed() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            let refusal: JobQueueError? = try await schema.pool.withConnection { conn in
                try await conn.query("BEGIN")
                try await conn.query("SET LOCAL ROLE imagejobs_client")
                var mapped: JobQueueError?
                do {
                    try await conn.query("INSERT INTO job_pauses (kind) VALUES ('image.generate')")
                } catch {
                    mapped = JobQueueError.from(error) as? JobQueueError
                }
                try await conn.query("ROLLBACK")
                return mapped
            }
            let mapped = try #require(refusal)
            #expect(mapped.code == .notPermitted)
            #expect(mapped.message.hasPrefix("the database role may not do this"))
        }
    }

    @Test("each role is allowed exactly what it needs and refused (42501) the rest")
    func privilegeMatrix() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let id = try await queue.submit(Factory.spec()).job.id
            let job = "'\(id.uuidString.lowercased())'"
            // statement, then whether client, worker, reporter may run it
            let matrix: [(String, [Bool])] = [
                ("SELECT id, status, priority, error_message FROM jobs", [true, true, false]),
                ("SELECT params FROM jobs", [true, true, false]),
                ("INSERT INTO jobs (id, group_id, kind, params) VALUES (gen_random_uuid(), gen_random_uuid(), 'test.script', '{}')", [true, false, false]),
                ("INSERT INTO batches (id, group_id, job_count) VALUES (gen_random_uuid(), gen_random_uuid(), 1)", [true, false, false]),
                ("UPDATE jobs SET params = '{}' WHERE id = \(job)", [false, false, false]),
                ("UPDATE jobs SET priority = 'high' WHERE id = \(job)", [false, false, false]),
                ("UPDATE jobs SET heartbeat_at = now() WHERE id = \(job)", [false, true, false]),
                ("UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = \(job)", [true, true, false]),
                ("DELETE FROM jobs WHERE id = \(job)", [false, false, false]),
                ("TRUNCATE jobs", [false, false, false]),
                ("CREATE TABLE intruder (x int)", [false, false, false]),
                ("DROP TABLE jobs", [false, false, false]),
                ("SELECT id FROM jobs WHERE status = 'pending' FOR UPDATE SKIP LOCKED", [true, true, false]),
                ("INSERT INTO job_results (job_id, content_type, bytes, byte_size, sha256, backend, generation_ms) VALUES (\(job), 'image/png', '\\x00', 1, repeat('a', 64), 'x', 1)", [false, true, false]),
                ("SELECT bytes FROM job_results", [true, true, false]),
                ("SELECT job_id, byte_size, sha256 FROM job_results", [true, true, false]),
                ("SELECT * FROM workers", [false, true, false]),
                ("SELECT * FROM report_queue_depth", [false, false, true]),
                ("SELECT * FROM report_retries", [false, false, true]),
                ("SELECT * FROM report_window_jobs", [false, false, false]),
                ("INSERT INTO workers (id, host, pid, concurrency, kinds) VALUES ('w', 'h', 1, 1, '{}')", [false, true, false]),
                ("DELETE FROM job_count_deltas", [false, true, false]),
                // Clients write the delta of their own one-job submits (migration 0010).
                ("INSERT INTO job_count_deltas VALUES (0, 'normal', now(), 1)", [true, false, false]),
                ("SELECT * FROM schema_migrations", [false, false, false]),
                // Enqueue from SQL (migration 0012): clients only.
                ("SELECT submit_job('{\"conversation_id\": \"\(UUID().lowercasedString)\", \"prompt\": \"x\"}')", [true, false, false]),
                ("SELECT * FROM submit_jobs('[{\"conversation_id\": \"\(UUID().lowercasedString)\", \"prompt\": \"x\"}]')", [true, false, false]),
                // Scheduling (migration 0016): the admitter is the workers'; limits and pauses are the owner's to change.
                ("SELECT * FROM admit_jobs(10)", [false, true, false]),
                ("SELECT * FROM job_wait(\(job))", [true, false, false]),
                ("SELECT * FROM job_position(\(job))", [true, false, false]),
                // API keys (migration 0018): the server checks them with the client's rights; only the owner makes them.
                ("SELECT prefix FROM api_keys", [true, false, false]),
                ("UPDATE api_keys SET revoked_at = now()", [false, false, false]),
                // Progress (migration 0019): the worker's to write.
                ("UPDATE jobs SET progress_step = 1, progress_total = 2 WHERE id = \(job)", [false, true, false]),
                ("SELECT * FROM job_limits", [true, true, false]),
                ("INSERT INTO job_limits (per_group) VALUES (1)", [false, false, false]),
                ("INSERT INTO job_pauses (kind) VALUES ('x')", [false, false, false]),
                ("UPDATE job_settings SET fair_share = false", [false, false, false]),
                ("DELETE FROM job_rate_tokens", [false, false, false]),
            ]
            var mismatches: [String] = []
            for (sql, expected) in matrix {
                for (role, want) in zip(["imagejobs_client", "imagejobs_worker", "imagejobs_reporter"], expected) {
                    let got = try await allowed(schema.pool, role: role, sql)
                    if got != want { mismatches.append("\(role) \(want ? "should" : "should not") run: \(sql)") }
                }
            }
            #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
            // Counting keeps working for a client: the trigger (hand-written insert) and the
            // library's self-counting one-job insert.
            let before = try await schema.pool.int("SELECT count(*) FROM job_count_deltas")
            try await schema.pool.withConnection { conn in
                try await conn.query("BEGIN")
                try await conn.query("SET LOCAL ROLE imagejobs_client")
                try await conn.query("INSERT INTO jobs (id, group_id, kind, params, tag) VALUES (gen_random_uuid(), gen_random_uuid(), 'test.script', '{}', now())")
                _ = try await queue.submit(Factory.spec(), on: conn)
                try await conn.query("COMMIT")
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM job_count_deltas") == before + 2)
            // The group roles carry the timeouts (a login role needs its own: docs/security.md).
            let settings = try await schema.pool.query(
                "SELECT r.rolname, s.setconfig::text AS config FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname LIKE 'imagejobs_%'")
            #expect(settings.count == 3)
            for row in settings { #expect(try row.decode("config", as: String.self).contains("statement_timeout=30s")) }
        }
    }

    @Test("no SQL is built from strings: values are bound, only allow-listed fragments are spliced")
    func staticScan() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources").standardized
        let files = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil)!.compactMap { $0 as? URL }
            .filter { $0.pathExtension == "swift" && !$0.path.contains("/Generated/") }
        #expect(files.count > 10)
        let allowedSplices: Set<String> = [
            "jobColumns", "JobSQL.jobColumns", "recordColumns", "recordType", "groupRecordType", "insertColumns", "returningTag", "JobSQL.returningTag",
            "backoffExpression(backoff)", "JobSQL.backoffExpression(backoff)",
        ]
        var violations: [String] = []
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let where_ = "\(file.lastPathComponent):\(n + 1)"
                // Text spliced into SQL must be one of the engine's own fragments.
                var rest = Substring(line)
                while let r = rest.range(of: "\\(unsafeSQL: ") {
                    let after = rest[r.upperBound...]
                    let name = String(after.prefix { $0 != ")" || false })
                    let spliced = name.contains("backoffExpression") ? name + ")" : name
                    if !allowedSplices.contains(spliced) && !line.contains("public mutating func appendInterpolation(unsafeSQL") {
                        violations.append("\(where_): splices \(spliced)")
                    }
                    rest = after
                }
                // libpq's simple-query call only for trusted scripts and LISTEN on a quoted name.
                if line.contains("PQexec(") && !(file.lastPathComponent == "PGConnection.swift" || file.lastPathComponent == "PGListener.swift") {
                    violations.append("\(where_): PQexec outside the wrapper")
                }
                // unsafeSQL initialisers take literals (or the migration script itself).
                if let r = line.range(of: "PGQuery(unsafeSQL: ") {
                    let arg = line[r.upperBound...]
                    if !(arg.hasPrefix("\"") || arg.hasPrefix("sql") || arg.hasPrefix("self") || arg.hasPrefix("lhs")) {
                        violations.append("\(where_): PGQuery(unsafeSQL:) with a non-literal")
                    }
                }
                // No string concatenation or String(format:) building a statement.
                if line.contains("\"SELECT") || line.contains("\"UPDATE") || line.contains("\"INSERT") || line.contains("\"DELETE") {
                    if line.contains("\" +") || line.contains("+ \"") || line.contains("String(format:") {
                        violations.append("\(where_): SQL built by concatenation")
                    }
                }
            }
        }
        #expect(violations.isEmpty, "\(violations.joined(separator: "\n"))")
    }
}
