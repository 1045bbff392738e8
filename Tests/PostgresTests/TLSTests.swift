import Foundation
import Postgres
import TestSupport
import Testing

/// `sslmode=verify-full` against the TLS-only cluster `make test` starts (`scripts/db.sh
/// tls-up`): a throwaway CA, a server certificate for `localhost` only.
@Suite("TLS with verify-full", .enabled(if: TLSCluster.directory != nil))
struct TLSTests {
    @Test("verify-full connects with the right CA and host, and refuses a wrong CA, a wrong host and no TLS")
    func verifyFull() async throws {
        let tls = try #require(TLSCluster.directory)
        let port = try String(contentsOfFile: "\(tls)/port", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        func url(host: String, ca: String, mode: String = "verify-full") -> String {
            "postgresql://postgres:tls-canary-pw@\(host):\(port)/postgres?sslmode=\(mode)&sslrootcert=\(tls)/\(ca)&connect_timeout=3"
        }
        let good = PGConfiguration(connectionString: url(host: "localhost", ca: "ca.pem"))
        #expect(good.description.contains("sslmode=verify-full") && !good.description.contains("tls-canary-pw"))
        let conn = try await PGConnection.connect(good, logger: TestLog.quiet)
        let row = try await conn.query("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0]
        #expect(try row.decode("ssl", as: Bool.self))
        #expect(try row.decode("version", as: String.self).hasPrefix("TLSv1."))
        await conn.close()

        let refused: [(String, String)] = [
            (url(host: "localhost", ca: "other-ca.pem"), "certificate verify failed"),
            (url(host: "127.0.0.1", ca: "ca.pem"), "does not match host name"),
            (url(host: "localhost", ca: "ca.pem", mode: "disable"), "no encryption"),
        ]
        for (connectionString, reason) in refused {
            do {
                let c = try await PGConnection.connect(PGConfiguration(connectionString: connectionString), logger: TestLog.quiet)
                await c.close()
                Issue.record("connected although it should not: \(reason)")
            } catch let error as PGError {
                #expect(error.kind == .connectionFailed, "\(error)")
                #expect(error.description.contains(reason), "\(error)")
                #expect(!error.description.contains("tls-canary-pw") && !"\(error)".contains("tls-canary-pw"))
            }
        }
    }
}

enum TLSCluster {
    /// The TLS cluster's directory (certificates and port), when one runs.
    static var directory: String? {
        guard let dir = ProcessInfo.processInfo.environment["IMAGEJOBS_TLS_DIR"], !dir.isEmpty,
              FileManager.default.fileExists(atPath: "\(dir)/port") else { return nil }
        return dir
    }
}
