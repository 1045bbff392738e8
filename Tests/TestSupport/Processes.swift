import Foundation
import Postgres

/// Runs a program to its end with `stdin` and returns its exit status and output.
public func runProcess(_ program: String, _ arguments: [String], stdin: String = "") async throws -> (status: Int32, stdout: String, stderr: String) {
    try await runOnNewThread(name: "test-process") {
        Result {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: program.contains("/") ? program : "/usr/bin/env")
            process.arguments = program.contains("/") ? arguments : [program] + arguments
            let input = Pipe(), output = Pipe(), error = Pipe()
            process.standardInput = input
            process.standardOutput = output
            process.standardError = error
            try process.run()
            input.fileHandleForWriting.write(Data(stdin.utf8))
            try input.fileHandleForWriting.close()
            let out = output.fileHandleForReading.readDataToEndOfFile()
            let err = error.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
        }
    }.get()
}
