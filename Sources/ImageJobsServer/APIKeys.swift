import Foundation
import JobEngine
import Postgres

/// What an API key may do. `submit` includes `read`; `admin` includes both.
public enum APIScope: String, Sendable, CaseIterable, Codable {
    case read, submit, admin

    /// Whether a key with these scopes may act with `self`.
    func isGranted(by scopes: Set<APIScope>) -> Bool {
        scopes.contains(.admin) || scopes.contains(self) || (self == .read && scopes.contains(.submit))
    }
}

/// A stored key, as lists show it: never the key itself.
public struct APIKeyInfo: Sendable, Equatable, Codable {
    public var id: UUID
    /// The first 12 characters after `ijk_`: how lists and `revoke` name the key.
    public var prefix: String
    public var name: String
    public var scopes: [APIScope]
    public var createdAt: Date
    public var revokedAt: Date?

    enum CodingKeys: String, CodingKey {
        case id, prefix, name, scopes, createdAt = "created_at", revokedAt = "revoked_at"
    }
}

/// Who made a request: the key's id (which signs the webhooks its submits name) and its scopes.
struct APICaller: Sendable {
    var keyID: UUID
    var scopes: Set<APIScope>
}

/// The HTTP API's keys (migration 0018). A key is `ijk_` and 48 hex digits (24 random bytes);
/// the database keeps its SHA-256 and its first 12 digits, so a stolen table gives no usable key.
public struct APIKeys: Sendable {
    let pool: PGPool

    public init(pool: PGPool) { self.pool = pool }

    /// Makes a key; the returned string is the only time the key exists outside the caller.
    public func create(name: String, scopes: Set<APIScope>) async throws -> (key: String, info: APIKeyInfo) {
        let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...100).contains(trimmed.count) else {
            throw JobQueueError(.invalidInput, "name must be 1–100 characters", field: "name")
        }
        guard !scopes.isEmpty else {
            throw JobQueueError(.invalidInput, "give at least one scope: read, submit or admin", field: "scopes")
        }
        var random = SystemRandomNumberGenerator()
        let secret = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &random)) }.joined()
        let key = "ijk_" + secret
        let ordered = APIScope.allCases.filter(scopes.contains).map(\.rawValue)
        let row = try await pool.query("""
            INSERT INTO api_keys (id, prefix, sha256, name, scopes)
            VALUES (\(UUID()), \(String(secret.prefix(12))), \(Data(SHA256.digest(Array(key.utf8)))), \(trimmed), \(ordered)::text[])
            RETURNING id, prefix, name, scopes, created_at, revoked_at
            """)[0]
        return (key, try Self.info(row))
    }

    /// Every key, newest first, revoked ones included.
    public func list() async throws -> [APIKeyInfo] {
        try await pool.query("SELECT id, prefix, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at DESC")
            .map(Self.info)
    }

    /// Revokes the key with this prefix (as `list` shows it); requests with it fail from now on.
    /// - Returns: `false` if no key has that prefix or it was already revoked.
    public func revoke(prefix: String) async throws -> Bool {
        let rows = try await pool.query("""
            UPDATE api_keys SET revoked_at = now() WHERE prefix = \(prefix.lowercased()) AND revoked_at IS NULL RETURNING id
            """)
        return !rows.isEmpty
    }

    /// The live key behind `key` (its id and scopes), or `nil` for a key that is malformed,
    /// unknown or revoked. The digests are compared in constant time.
    func caller(ofKey key: String) async throws -> APICaller? {
        let hex = key.dropFirst(4)
        guard key.hasPrefix("ijk_"), hex.count == 48, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
        guard let row = try await pool.query("""
            SELECT id, sha256, scopes FROM api_keys WHERE prefix = \(String(hex.prefix(12))) AND revoked_at IS NULL
            """).first
        else { return nil }
        let stored = [UInt8](try row.decode("sha256", as: Data.self))
        let given = SHA256.digest(Array(key.utf8))
        guard SHA256.constantTimeEqual(stored, given) else { return nil }
        return APICaller(keyID: try row.decode("id"), scopes: Set(try row.decode("scopes", as: [String].self).compactMap(APIScope.init(rawValue:))))
    }

    private static func info(_ row: PGRow) throws -> APIKeyInfo {
        APIKeyInfo(
            id: try row.decode("id"), prefix: try row.decode("prefix"), name: try row.decode("name"),
            scopes: try row.decode("scopes", as: [String].self).compactMap(APIScope.init(rawValue:)),
            createdAt: try row.decode("created_at"), revokedAt: try row.decode("revoked_at"))
    }
}
