import Foundation
import Testing

@testable import Postgres

@Suite("queries, literals and timestamps (no database)")
struct PGQueryTests {
    @Test("interpolated values become positional parameters, never SQL text")
    func interpolation() {
        let evil = "'; DROP TABLE jobs;--"
        let q: PGQuery = "SELECT * FROM jobs WHERE prompt = \(evil) AND n = \(3) AND x = \(String?.none)"
        #expect(q.sql == "SELECT * FROM jobs WHERE prompt = $1 AND n = $2 AND x = $3")
        #expect(q.binds == [.text(evil), .text("3"), .null])
        #expect(!q.description.contains("DROP"))
    }

    @Test("a fragment joins a query with its placeholders renumbered and its values bound after the query's")
    func fragments() {
        let condition: PGQuery = "status = \("pending") AND n > \(7)"
        let q: PGQuery = "SELECT * FROM jobs WHERE group_id = \("g") AND \(fragment: condition) LIMIT \(10)"
        #expect(q.sql == "SELECT * FROM jobs WHERE group_id = $1 AND status = $2 AND n > $3 LIMIT $4")
        #expect(q.binds == [.text("g"), .text("pending"), .text("7"), .text("10")])
        let empty: PGQuery = "true"
        let twice: PGQuery = "\(fragment: condition) OR \(fragment: condition) OR \(fragment: empty)"
        #expect(twice.sql == "status = $1 AND n > $2 OR status = $3 AND n > $4 OR true")
        #expect(twice.binds.count == 4)
        let price: PGQuery = "SELECT '$' || amount FROM t WHERE id = \(5)"
        let wrapped: PGQuery = "SELECT \(1), (\(fragment: price))"
        #expect(wrapped.sql == "SELECT $1, (SELECT '$' || amount FROM t WHERE id = $2)", "a $ without digits stays as it is")
    }

    @Test("identifiers are quoted with embedded quotes doubled")
    func identifiers() {
        let q: PGQuery = "SET search_path TO \(identifier: "we\"ird")"
        #expect(q.sql == "SET search_path TO \"we\"\"ird\"")
        #expect(q.binds.isEmpty)
    }

    @Test("array literals escape quotes and backslashes and round-trip")
    func arrays() throws {
        let values = ["plain", "with \"quote\"", "back\\slash", "", "NULL", "a,b", "{x}"]
        guard case .text(let literal) = values.pgBind else {
            Issue.record("arrays bind as text")
            return
        }
        #expect(try PGArrayLiteral.decode(literal) == values.map { Optional($0) })
        #expect(try PGArrayLiteral.decode("{1,NULL,3}") == ["1", nil, "3"])
        #expect(try PGArrayLiteral.decode("{}") == [])
    }

    @Test("timestamps format and parse, with offsets and fractions")
    func timestamps() {
        let date = Date(timeIntervalSince1970: 1_764_579_114.5)
        #expect(PGTimestamp.format(date) == "2025-12-01 08:51:54.500000+00")
        #expect(PGTimestamp.parse("2025-12-01 08:51:54.5+00") == date)
        #expect(PGTimestamp.parse("2025-12-01 10:51:54.5+02") == date)
        #expect(PGTimestamp.parse("2025-12-01 14:21:54.5+05:30") == date)
        #expect(PGTimestamp.parse("1970-01-01 00:00:00+00") == Date(timeIntervalSince1970: 0))
        #expect(PGTimestamp.parse("garbage") == nil)
    }

    @Test("quoted values are redacted from messages, identifiers kept")
    func redaction() {
        let m = Redaction.redactQuoted(
            "invalid input syntax for type uuid: \"Secret Prompt\" near \"jobs_pkey\"", keeping: [])
        #expect(m == "invalid input syntax for type uuid: \"…\" near \"jobs_pkey\"")
        #expect(Redaction.redactQuoted("unterminated \"abc", keeping: []) == "unterminated \"…")
    }

    @Test("SQLSTATE classes decide what is transient")
    func sqlStates() {
        #expect(SQLState.serializationFailure.isTransient)
        #expect(SQLState("08006").isTransient)
        #expect(SQLState("08006").invalidatesConnection)
        #expect(!SQLState.uniqueViolation.isTransient)
        #expect(SQLState.uniqueViolation.errorClass == "23")
    }

    @Test("configuration descriptions show only allow-listed fields")
    func configurationDescription() {
        let c = PGConfiguration(connectionString: "postgresql://bob:hunter2@db.example:6432/jobs?sslmode=verify-full")
        #expect(c.description == "PGConfiguration(host=db.example port=6432 dbname=jobs user=bob sslmode=verify-full)")
        #expect(PGConfiguration.resolve(explicit: nil, environment: ["DATABASE_URL": "postgresql://x@y/z"]).connectionString == "postgresql://x@y/z")
        #expect(PGConfiguration.resolve(explicit: "a=b", environment: ["DATABASE_URL": "postgresql://x@y/z"]).connectionString == "a=b")
        #expect(PGConfiguration.resolve(explicit: nil, environment: [:]).connectionString == "")
    }
}
