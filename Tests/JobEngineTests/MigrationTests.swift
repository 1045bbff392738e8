import Foundation
import JobEngine
import Postgres
import TestSupport
import Testing

@Suite("migrations", .enabled(if: TestDatabase.isConfigured))
struct MigrationTests {
    @Test("the embedded migrations are exactly the files in migrations/")
    func embeddedMatchFiles() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../migrations").standardized
        let onDisk = try Migration.load(directory: dir)
        #expect(onDisk.map(\.fileStem) == Migration.embedded.map(\.fileStem))
        #expect(onDisk.map(\.checksum) == Migration.embedded.map(\.checksum), "run `make generate` after editing migrations/")
        #expect(onDisk.map { SHA256.hexDigest(Array($0.down.utf8)) } == Migration.embedded.map { SHA256.hexDigest(Array($0.down.utf8)) })
        for m in onDisk {
            #expect(m.up.hasPrefix("-- \(String(format: "%04d", m.version))"), "\(m.fileStem).up.sql needs its prose header")
            #expect(m.down.hasPrefix("-- \(String(format: "%04d", m.version))"), "\(m.fileStem).down.sql needs its prose header")
        }
    }

    @Test("up, status, down one step, down to 0, up again")
    func upDownUp() async throws {
        try await TestDatabase.withSchema { schema in
            let migrator = Migrator(pool: schema.pool, logger: TestLog.quiet)
            let dry = try await migrator.up(dryRun: true)
            #expect(dry.map(\.version) == Migration.embedded.map(\.version))
            #expect(try await schema.pool.int("SELECT count(*) FROM schema_migrations") == 0)
            #expect(try await migrator.up().count == Migration.embedded.count)
            #expect(try await migrator.up().isEmpty)
            var status = try await migrator.status()
            #expect(status.allSatisfy { $0.applied && !$0.changed })
            let last = Migration.embedded.last!.version
            #expect(try await migrator.down().map(\.version) == [last])
            status = try await migrator.status()
            #expect(status.first { $0.version == last }?.applied == false)
            _ = try await migrator.down(to: 0)
            #expect(try await schema.pool.int("SELECT count(*) FROM schema_migrations") == 0)
            #expect(try await schema.pool.int("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'jobs'") == 0)
            #expect(try await migrator.up().count == Migration.embedded.count)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs") == 0)
        }
    }

    @Test("a database of the last release (0011) holding jobs in every state migrates to the head and back with every row intact")
    func dataCarriedForward() async throws {
        try await TestDatabase.withSchema { schema in
            let migrator = Migrator(pool: schema.pool, logger: TestLog.quiet)
            _ = try await migrator.up(to: 11)
            let conversation = UUID(), batch = UUID()
            // Rows as 0011's schema holds them: one job in each state, a batch, a result.
            try await schema.pool.query("""
                INSERT INTO batches (id, conversation_id, job_count, idempotency_key) VALUES (\(batch), \(conversation), 2, 'b1')
                """)
            try await schema.pool.query("""
                INSERT INTO jobs (id, conversation_id, batch_id, kind, params, priority, status, attempt, retry_count, worker_id,
                                  started_at, heartbeat_at, deadline_at, finished_at, error_message, idempotency_key)
                VALUES
                  (gen_random_uuid(), \(conversation), \(batch), 'image.generate', '{"prompt":"p"}', 'high', 'pending', 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, 'k1'),
                  (gen_random_uuid(), \(conversation), \(batch), 'image.generate', '{"prompt":"r"}', 'normal', 'running', 1, 0, 'w1', now(), now(), now() + interval '1 minute', NULL, NULL, NULL),
                  (gen_random_uuid(), \(conversation), NULL, 'image.generate', '{"prompt":"c"}', 'low', 'completed', 1, 0, 'w1', now(), now(), now(), now(), NULL, NULL),
                  (gen_random_uuid(), \(conversation), NULL, 'image.generate', '{"prompt":"e"}', 'normal', 'error', 4, 3, 'w1', now(), now(), now(), now(), 'boom', NULL),
                  (gen_random_uuid(), \(conversation), NULL, 'image.generate', '{"prompt":"x"}', 'normal', 'cancelled', 0, 0, NULL, NULL, NULL, NULL, now(), NULL, NULL)
                """)
            try await schema.pool.query("""
                INSERT INTO job_results (job_id, content_type, bytes, width, height, byte_size, sha256, backend, generation_ms, metadata)
                SELECT id, 'image/png', '\\x00', 640, 480, 1, repeat('a', 64), 'procedural', 1, '{"seed": "7"}' FROM jobs WHERE status = 'completed'
                """)
            let snapshot: PGQuery = "SELECT string_agg(concat_ws('|', id, batch_id, kind, params, priority, status, attempt, retry_count, error_message, idempotency_key), ',' ORDER BY id) FROM jobs"
            let before: String = try await schema.pool.scalar(snapshot)

            _ = try await migrator.up()
            let after: String = try await schema.pool.scalar(snapshot)
            #expect(after == before)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE group_id = \(conversation)") == 5)
            #expect(try await schema.pool.int("SELECT count(*) FROM batches WHERE group_id = \(conversation)") == 1)
            #expect(try await schema.pool.int("SELECT count(*) FROM report_conversations WHERE conversation_id = \(conversation)") == 1)
            // The result's size moved into its metadata (0015), beside what was there.
            #expect(try await schema.pool.int("""
                SELECT count(*) FROM job_results WHERE metadata = '{"seed": "7", "width": 640, "height": 480}'::jsonb
                """) == 1)
            // The queue works on the carried rows: positions are exact, the key still dedupes.
            let queue = JobQueue(pool: schema.pool, logger: TestLog.quiet)
            let added = try await queue.submit(JobSpec(kind: "image.generate", params: [:], groupID: conversation))
            #expect(try await queue.position(added.job.id).position == 1)
            let again = try await queue.submit(JobSpec(kind: "image.generate", params: [:], groupID: conversation, idempotencyKey: "k1"))
            #expect(!again.created)

            _ = try await migrator.down(to: 11)
            #expect(try await schema.pool.int("SELECT count(*) FROM jobs WHERE conversation_id = \(conversation)") == 6)
            #expect(try await schema.pool.int("""
                SELECT count(*) FROM job_results WHERE width = 640 AND height = 480 AND metadata = '{"seed": "7"}'::jsonb
                """) == 1)
        }
    }

    @Test("changing the columns' types (0009) recreates the views that read jobs, with comments and grants, and leaves other views alone")
    func domainMigrationKeepsViews() async throws {
        try await TestDatabase.withSchema { schema in
            let migrator = Migrator(pool: schema.pool, logger: TestLog.quiet)
            _ = try await migrator.up(to: 8)
            // An operator's view over jobs, one over a report view, and one that reads neither
            // (like an extension's view in this schema, which the migration may not drop).
            for statement: PGQuery in [
                "CREATE VIEW ops_pending AS SELECT id, kind, priority FROM jobs WHERE status = 'pending'",
                "COMMENT ON VIEW ops_pending IS 'pending jobs for the ops board'",
                "GRANT SELECT ON ops_pending TO imagejobs_reporter",
                "CREATE VIEW ops_depth AS SELECT * FROM report_queue_depth",
                "CREATE VIEW ops_clock AS SELECT now() AS at",
                // One pending job, for the views to show through every step.
                "INSERT INTO jobs (id, conversation_id, kind, params, priority) VALUES (gen_random_uuid(), gen_random_uuid(), 'test.script', '{}', 'high')",
            ] { _ = try await schema.pool.query(statement) }
            let relations: PGQuery = "SELECT string_agg(relname || ':' || oid, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relname = 'ops_clock'"
            let before: String? = try await schema.pool.scalar(relations)
            let views: PGQuery = "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relkind = 'v'"
            let viewsBefore: String? = try await schema.pool.scalar(views)
            #expect(viewsBefore?.contains("report_queue_depth,report_retries") == true && viewsBefore?.contains("ops_depth") == true)
            for step in ["up", "down", "up"] {
                if step == "up" { _ = try await migrator.up() } else { _ = try await migrator.down(to: 8) }
                #expect(try await schema.pool.int("SELECT count(*) FROM ops_pending WHERE priority = 'high'") == 1, "\(step)")
                #expect(try await schema.pool.int("SELECT jobs FROM ops_depth WHERE status = 'pending' AND priority = 'high'") == 1, "\(step)")
                #expect(try await schema.pool.int("""
                    SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace
                    AND relname = 'ops_pending' AND obj_description(oid, 'pg_class') = 'pending jobs for the ops board'
                    AND has_table_privilege('imagejobs_reporter', oid, 'SELECT')
                    """) == 1, "\(step): the view keeps its comment and grant")
                // At the head, also 0022's two building blocks.
                let names: String? = try await schema.pool.scalar(views)
                let added: Set<Substring> = step == "up" ? ["report_pending_counts", "report_window_failed_jobs"] : []
                #expect(names.map { Set($0.split(separator: ",")) } == viewsBefore.map { Set($0.split(separator: ",")).union(added) }, "\(step): every view is back")
                let after: String? = try await schema.pool.scalar(relations)
                #expect(after == before, "\(step): a view that does not read jobs is never dropped")
            }
            #expect(try await schema.pool.int("SELECT count(*) FROM pg_attribute WHERE attrelid = 'jobs'::regclass AND attname = 'kind' AND atttypid = 'job_kind'::regtype") == 1)
        }
    }

    @Test("an applied migration whose file changed is refused, naming the file")
    func checksumChanged() async throws {
        try await TestDatabase.withSchema { schema in
            try await Migrator(pool: schema.pool, logger: TestLog.quiet).up()
            var changed = Migration.embedded
            changed[0].up += "\n-- edited"
            let error = await #expect(throws: MigrationError.self) {
                try await Migrator(pool: schema.pool, migrations: changed, logger: TestLog.quiet).up()
            }
            #expect(error?.code == .checksumMismatch)
            #expect(error?.description.contains("0001_create_jobs.up.sql") == true)
            let status = try await Migrator(pool: schema.pool, migrations: changed, logger: TestLog.quiet).status()
            #expect(status[0].changed)
        }
    }

    @Test("a database that applied a superseded text of a corrected migration is up to date; any other change is refused")
    func supersededChecksumAccepted() async throws {
        try await TestDatabase.withSchema { schema in
            let migrator = Migrator(pool: schema.pool, logger: TestLog.quiet)
            try await migrator.up()
            // As recorded by a database that ran 0009's first text.
            _ = try await schema.pool.query("UPDATE schema_migrations SET checksum = 'a7ce562197603204eb763919ae182ed6b0f819d3cbdfa5db9970daf6e2ed9091' WHERE version = 9")
            #expect(try await migrator.up().isEmpty)
            #expect(try await migrator.status().allSatisfy { $0.applied && !$0.changed })
            // The same checksum recorded for another version is a change.
            _ = try await schema.pool.query("UPDATE schema_migrations SET checksum = 'a7ce562197603204eb763919ae182ed6b0f819d3cbdfa5db9970daf6e2ed9091' WHERE version = 8")
            let error = await #expect(throws: MigrationError.self) { try await migrator.up() }
            #expect(error?.code == .checksumMismatch)
            #expect(error?.description.contains("0008_partial_idempotency_index.up.sql") == true)
        }
    }

    @Test("two migrators at once leave exactly one set of applied versions")
    func concurrentMigrators() async throws {
        try await TestDatabase.withSchema { schema in
            let pools = (0..<4).map { _ in schema.makePool(maxConnections: 1) }
            let applied = try await withThrowingTaskGroup(of: Int.self) { group in
                for pool in pools {
                    group.addTask { try await Migrator(pool: pool, logger: TestLog.quiet).up().count }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(applied.sorted() == [0, 0, 0, Migration.embedded.count])
            #expect(try await schema.pool.int("SELECT count(*) FROM schema_migrations") == Migration.embedded.count)
            for pool in pools { await pool.close() }
        }
    }
}
