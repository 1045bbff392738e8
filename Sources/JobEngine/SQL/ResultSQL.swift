import Foundation
import Postgres

/// Results' statements (table `job_results`).
enum ResultSQL: StatementCatalog {
    /// Stores a job's result (replacing one from an earlier attempt of the same job).
    static func store(_ r: JobResultRecord, sha256: String) -> PGQuery {
        statement("""
        INSERT INTO job_results (job_id, content_type, bytes, byte_size, sha256, backend, generation_ms, metadata)
        VALUES (\(r.jobID), \(r.contentType), \(PGBytes(r.bytes)), \(r.bytes.count), \(sha256),
                \(r.backend), \(r.generationMilliseconds), \(JobSQL.JSONText(text: JSONValue.object(r.metadata).jsonText))::jsonb)
        ON CONFLICT (job_id) DO UPDATE SET
            content_type = excluded.content_type, bytes = excluded.bytes,
            byte_size = excluded.byte_size, sha256 = excluded.sha256, backend = excluded.backend,
            generation_ms = excluded.generation_ms, metadata = excluded.metadata, created_at = now()
        """)
    }

    static func info(jobID: UUID) -> PGQuery {
        statement("""
        SELECT content_type, byte_size, sha256, backend, generation_ms, metadata::text AS metadata, created_at
        FROM job_results WHERE job_id = \(jobID)
        """)
    }

    static func bytes(jobID: UUID) -> PGQuery {
        statement("SELECT bytes FROM job_results WHERE job_id = \(jobID)")
    }
}
