import Foundation
import Postgres

/// A job's stored result: bytes with a content type, and metadata that describes them (their
/// dimensions, the settings that made them).
public struct JobResultRecord: Sendable, Equatable {
    public var jobID: UUID
    public var contentType: String
    public var bytes: [UInt8]
    /// What produced it (a backend's name).
    public var backend: String
    public var generationMilliseconds: Int
    public var metadata: [String: JSONValue]

    public init(
        jobID: UUID, contentType: String, bytes: [UInt8], backend: String, generationMilliseconds: Int,
        metadata: [String: JSONValue] = [:]
    ) {
        self.jobID = jobID
        self.contentType = contentType
        self.bytes = bytes
        self.backend = backend
        self.generationMilliseconds = generationMilliseconds
        self.metadata = metadata
    }
}

/// A stored result without its bytes (what `status` shows).
public struct JobResultInfo: Sendable, Equatable, Codable {
    public var contentType: String
    public var byteSize: Int
    public var sha256: String
    public var backend: String
    public var generationMilliseconds: Int
    public var metadata: [String: JSONValue]
    public var createdAt: Date

    enum CodingKeys: String, CodingKey {
        case sha256, backend, metadata
        case contentType = "content_type", byteSize = "byte_size", generationMilliseconds = "generation_ms", createdAt = "created_at"
    }
}

/// Result storage in PostgreSQL (table `job_results`), so any worker on any machine can store
/// and any client can read.
public enum JobResults {
    /// Stores a result; meant for ``JobResult/store`` so it commits with the attempt's completion.
    public static func store(_ result: JobResultRecord, on connection: PGConnection) async throws {
        try await connection.query(
            ResultSQL.store(result, sha256: SHA256.hexDigest(result.bytes)))
    }

    /// The result's description, or `nil` when the job has none.
    public static func info(_ jobID: UUID, pool: PGPool) async throws -> JobResultInfo? {
        guard let row = try await pool.query(ResultSQL.info(jobID: jobID)).first else { return nil }
        return JobResultInfo(
            contentType: try row.decode("content_type"), byteSize: try row.decode("byte_size"), sha256: try row.decode("sha256"), backend: try row.decode("backend"),
            generationMilliseconds: try row.decode("generation_ms"), metadata: try row.decodeJSON("metadata"),
            createdAt: try row.decode("created_at"))
    }

    /// The result's bytes, or `nil` when the job has none.
    public static func bytes(_ jobID: UUID, pool: PGPool) async throws -> [UInt8]? {
        guard let row = try await pool.query(ResultSQL.bytes(jobID: jobID)).first else { return nil }
        return [UInt8](try row.decode("bytes", as: Data.self))
    }
}
