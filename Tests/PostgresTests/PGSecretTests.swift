import Foundation
import Logging
import Postgres
import TestSupport
import Testing

@Suite("secrets never leak", .enabled(if: TestDatabase.isConfigured))
struct PGSecretTests {
    static let canaryPassword = "Canary-Pw-\(UUID().uuidString.prefix(8))"
    static let canaryPrompt = "Canary prompt \(UUID().uuidString.prefix(8)) of a red fox"

    @Test("a canary password appears in no description, error or log line", arguments: [
        "postgresql://postgres:\(canaryPassword)@127.0.0.1:1/imagejobs",
        "postgresql://postgres@127.0.0.1:1/imagejobs?password=\(canaryPassword)",
        "host=127.0.0.1 port=1 user=postgres password=\(canaryPassword) dbname=imagejobs",
        "host=127.0.0.1 port=1 password='\(canaryPassword) with spaces' dbname=imagejobs",
        "host=127.0.0.1 port=1 sslpassword=\(canaryPassword) dbname=imagejobs",
        "host=127.0.0.1 port=1 password=\(canaryPassword) bogus_option=\(canaryPassword)",
        "postgresql://postgres:\(canaryPassword)@[::1",
        "password=\(canaryPassword) broken='",
    ])
    func passwordNeverLeaks(connectionString: String) async throws {
        let (logger, capture) = TestLog.capturing()
        var configuration = PGConfiguration(connectionString: connectionString)
        configuration.connectTimeoutSeconds = 1
        var texts = [configuration.description, configuration.debugDescription, String(describing: configuration)]
        var dumped = ""
        dump(configuration, to: &dumped)
        texts.append(dumped)
        let pool = PGPool(configuration: configuration, logger: logger)
        do {
            _ = try await pool.query("SELECT 1")
            Issue.record("connecting to port 1 should fail")
        } catch {
            texts.append(String(describing: error))
            texts.append(String(reflecting: error))
            texts.append("\(error)")
        }
        texts += capture.all
        for text in texts {
            #expect(!text.contains(Self.canaryPassword), "leaked in: \(text)")
        }
    }

    @Test("a canary prompt in a failing statement appears in no error description")
    func canaryPrompt() async throws {
        try await TestDatabase.withSchema { schema in
            try await schema.pool.query(
                "CREATE TABLE p (prompt text CONSTRAINT p_prompt_short CHECK (length(prompt) < 5), n int, j jsonb)")
            let (logger, capture) = TestLog.capturing()
            let pool = PGPool(configuration: schema.configuration, logger: logger)
            var texts: [String] = []
            for query: PGQuery in [
                "INSERT INTO p (prompt) VALUES (\(Self.canaryPrompt))",
                "INSERT INTO p (n) VALUES (\(Self.canaryPrompt)::int)",
                "INSERT INTO p (j) VALUES (\(Self.canaryPrompt)::jsonb)",
                "SELECT \(Self.canaryPrompt)::uuid",
            ] {
                do {
                    try await pool.query(query)
                    Issue.record("statement should fail")
                } catch {
                    texts += [String(describing: error), String(reflecting: error)]
                    if let tx = error as? PGError { texts.append(tx.description) }
                }
            }
            texts += capture.all
            for text in texts {
                #expect(!text.contains(Self.canaryPrompt), "leaked in: \(text)")
                #expect(!text.contains("Canary prompt"), "leaked in: \(text)")
            }
            // The check violation still names its constraint.
            #expect(texts.contains { $0.contains("p_prompt_short") })
            await pool.close()
        }
    }
}
