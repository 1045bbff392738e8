import Foundation
import JobEngine
import Postgres
import TestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@Suite("serve and api-keys", .enabled(if: CLI.isAvailable))
struct ServeCommandTests {
    @Test("api-keys create prints the key once as its last line; list never shows it; revoke ends it; bad scopes write nothing")
    func apiKeys() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            let cli = CLI(databaseURL: schema.connectionString)
            let bad = try await cli.run(["api-keys", "create", "--scopes", "read,everything"])
            #expect(bad.status == 64)
            #expect(bad.stderr.contains("unknown scope \"everything\"; allowed: read, submit, admin"))
            #expect(try await schema.pool.int("SELECT count(*)::int FROM api_keys") == 0)

            let created = try await cli.run(["api-keys", "create", "--scopes", "submit,read", "--name", "chat backend"])
            #expect(created.status == 0, "\(created.stderr)")
            let key = try #require(created.stdout.split(separator: "\n").last.map(String.init))
            #expect(key.hasPrefix("ijk_") && key.count == 52)

            let listed = try await cli.run(["api-keys", "list", "--json"])
            #expect(!listed.stdout.contains(String(key.dropFirst(4))))
            let keys = try JSONValue.parse(listed.stdout)
            guard case .array(let rows) = keys, case .object(let row)? = rows.first else {
                Issue.record("api-keys list --json is not an array of keys: \(listed.stdout.prefix(200))")
                return
            }
            #expect(row["name"]?.stringValue == "chat backend")
            #expect(row["scopes"] == .array(["read", "submit"]))
            let prefix = try #require(row["prefix"]?.stringValue)
            #expect(key.dropFirst(4).hasPrefix(prefix))

            #expect(try await cli.run(["api-keys", "revoke", prefix]).status == 0)
            let again = try await cli.run(["api-keys", "revoke", prefix])
            #expect(again.status == 66)
            #expect(try await schema.pool.int("SELECT count(*)::int FROM api_keys WHERE revoked_at IS NOT NULL") == 1)
        }
    }

    @Test("webhooks allow takes a name, name:port or URL and stores its host; list shows them; disallow removes; bad hosts write nothing")
    func webhookHosts() async throws {
        try await TestDatabase.withMigratedSchema { schema, _ in
            let cli = CLI(databaseURL: schema.connectionString)
            for bad in ["hooks.example.com/path", "", "http://", "exa mple.com"] {
                let answer = try await cli.run(["webhooks", "allow", bad])
                #expect(answer.status == 64, "\(bad): \(answer.stderr)")
                #expect(answer.stderr.contains("give a host as NAME, NAME:PORT or a URL"), "\(answer.stderr)")
            }
            #expect(try await schema.pool.int("SELECT count(*)::int FROM webhook_hosts") == 0)

            #expect(try await cli.run(["webhooks", "allow", "Hooks.Example.com"]).stdout == "allowed hooks.example.com\n")
            #expect(try await cli.run(["webhooks", "allow", "https://10.1.2.3:8443/receive"]).stdout == "allowed 10.1.2.3:8443\n")
            #expect(try await cli.run(["webhooks", "allow", "hooks.example.com"]).status == 0, "allowing twice is fine")
            #expect(try await cli.run(["webhooks", "list"]).stdout == "10.1.2.3:8443\nhooks.example.com\n")
            #expect(try await cli.run(["webhooks", "disallow", "hooks.example.com"]).status == 0)
            #expect(try await cli.run(["webhooks", "disallow", "hooks.example.com"]).status == 66)
            #expect(try await cli.run(["webhooks", "list", "--json"]).stdout.contains("[\"10.1.2.3:8443\"]"))
        }
    }

    @Test("serve answers on its port with the keys api-keys made, and stops cleanly on SIGTERM with an event stream open")
    func serve() async throws {
        try await TestDatabase.withMigratedSchema { schema, queue in
            let cli = CLI(databaseURL: schema.connectionString)
            let key = try #require(try await cli.run(["api-keys", "create", "--scopes", "read"]).stdout.split(separator: "\n").last)
            let port = try freePort()
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("serve-\(UUID().uuidString).log")
            let server = try cli.start(["serve", "--port", "\(port)"], stderr: log)
            defer { if server.isRunning { server.terminate() } }

            let conversation = UUID()
            let (job, _) = try await queue.submit(Factory.spec(conversation: conversation, kind: "image.generate"))
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/jobs/\(job.id.lowercasedString)")!)
            request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
            var answer: (Data, URLResponse)?
            let up = try await eventually(timeout: .seconds(20)) {
                answer = try? await URLSession.shared.data(for: request)
                return answer != nil
            }
            #expect(up, "the server's stderr: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
            #expect((answer?.1 as? HTTPURLResponse)?.statusCode == 200)
            let body = try JSONValue.parse(String(decoding: answer?.0 ?? Data(), as: UTF8.self))
            #expect(body["id"]?.stringValue == job.id.lowercasedString)
            #expect(body["conversation_id"]?.stringValue == conversation.lowercasedString)

            // An open event stream must not hold the shutdown: the server ends it.
            let stream = try EventStreamClient(
                port: port, path: "/v1/conversations/\(conversation.lowercasedString)/events", headers: ["Authorization": "Bearer \(key)"])
            var events = stream.events.makeAsyncIterator()
            #expect(await stream.next(iterator: &events)?.event == "job")
            let stopped = Date()
            server.terminate()
            await waitForExit(server)
            #expect(Date().timeIntervalSince(stopped) < 10, "SIGTERM to exit")
            #expect(await stream.next(timeout: .seconds(5), iterator: &events) == nil, "the stream ended with the server")
            #expect(server.terminationStatus == 0, "the server's stderr: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        }
    }
}
