import Foundation
import JobEngine
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Runs a program the operator names: the job's parameters as JSON on stdin (with the job id
/// and attempt), a PNG expected on stdout. A non-zero exit is a retryable failure whose stderr
/// tail becomes the message; exit code 65 is a permanent one. A line `progress STEP/TOTAL` on
/// stderr (`progress 12/30`) reports progress and is left out of that tail. The program runs in a process
/// group of its own, killed at the job's deadline or on cancellation, and when the program
/// exits, whatever it left running is killed with it.
///
/// swift-subprocess starts the child: its pipes are close-on-exec and every other descriptor of
/// this process is closed in the child, so concurrent children never hold each other's stdin
/// open (which would keep them waiting for an EOF that never comes), and a generator never
/// inherits the worker's database sockets or files. Its I/O is asynchronous, so no thread of
/// the cooperative pool waits on a pipe.
public struct CommandGenerator: ImageGenerator {
    public let name = "command"
    /// The program and its arguments.
    public let arguments: [String]

    /// The most a program may write to stdout: far above any PNG the parameters allow.
    static let outputLimit = 64 << 20
    /// How much of stderr's end is kept for the error message.
    static let errorTailBytes = 500

    public init(commandLine: String) throws {
        Self.ignoreBrokenPipes
        let words = try Self.split(commandLine)
        guard !words.isEmpty else { throw ImageGenerationError.permanent("the generator command is empty") }
        arguments = words
    }

    /// Writing to a program that exited without reading its input must fail the write, not
    /// end this process with SIGPIPE.
    private static let ignoreBrokenPipes: Void = { signal(SIGPIPE, SIG_IGN) }()

    public func generate(_ request: ImageRequest) async throws -> GeneratedImage {
        try await generate(request) { _, _ in }
    }

    public func generate(_ request: ImageRequest, progress: @escaping @Sendable (_ step: Int, _ total: Int) -> Void) async throws -> GeneratedImage {
        var input = request.parameters.jsonObject
        input["job_id"] = .string(request.jobID.lowercasedString)
        input["attempt"] = .number(Double(request.attempt))
        let stdin = [UInt8](try JSONEncoder().encode(input))
        let deadline = ContinuousClock.now + .milliseconds(Int64(max(0.1, request.remainingSeconds) * 1000))

        let outcome: Outcome
        do {
            outcome = try await withThrowingTaskGroup(of: Outcome.self) { group in
                group.addTask { try await self.run(stdin: stdin, progress: progress) }
                group.addTask {
                    try await Task.sleep(until: deadline, clock: .continuous)
                    return .pastDeadline
                }
                // The first to finish decides; cancelling the other tears the child's group down
                // (or stops the timer), and the group waits for it before returning.
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch let error as SubprocessError {
            throw ImageGenerationError.permanent("command: could not start \(arguments[0]): \(error)")
        }
        if Task.isCancelled { throw CancellationError() }

        switch outcome {
        case .pastDeadline:
            throw ImageGenerationError.retryable("command: \(arguments[0]) ran past the job's deadline and was killed")
        case .ended(.signaled(let signal), _, _):
            throw ImageGenerationError.retryable("command: \(arguments[0]) was killed by signal \(signal)")
        case .ended(.exited(let code), let out, let errorTail):
            let tail = String(decoding: errorTail, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if code == 65 { throw ImageGenerationError.permanent("command: exit 65: \(tail)") }
            if code != 0 { throw ImageGenerationError.retryable("command: exit \(code): \(tail)") }
            guard let info = PNG.inspect(out) else {
                throw ImageGenerationError.permanent("command: \(arguments[0]) wrote \(out.count) bytes to stdout that are not a valid PNG")
            }
            return GeneratedImage(png: out, width: info.width, height: info.height, backend: name, metadata: ["command": arguments[0]])
        case .outputTooLarge:
            throw ImageGenerationError.permanent("command: \(arguments[0]) wrote more than \(Self.outputLimit >> 20) MiB to stdout")
        }
    }

    enum Outcome: Sendable {
        case ended(TerminationStatus, stdout: [UInt8], stderrTail: [UInt8])
        case outputTooLarge
        case pastDeadline
    }

    /// Runs the program to its end: feeds stdin, collects stdout and the tail of stderr.
    private func run(stdin: [UInt8], progress: @escaping @Sendable (Int, Int) -> Void) async throws -> Outcome {
        var options = PlatformOptions()
        // Its own process group, so that the kill reaches every process it started.
        options.processGroupID = 0
        options.teardownSequence = [.send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .zero)]
        let program = arguments[0]
        let executable: Executable = program.contains("/") ? .path(FilePath(program)) : .name(program)
        let result = try await Subprocess.run(
            executable, arguments: Arguments(Array(arguments.dropFirst())), platformOptions: options,
            input: .inputWriter, output: .sequence, error: .sequence
        ) { execution -> (stdout: [UInt8]?, stderrTail: [UInt8]) in
            // A program may exit without reading its input: judge it by its exit, not the write.
            async let inputWritten: Void = {
                _ = try? await execution.standardInputWriter.write(stdin)
                try? await execution.standardInputWriter.finish()
            }()
            async let stderrTail = Self.read(errors: execution.standardError, keeping: Self.errorTailBytes, progress: progress)
            var stdout: [UInt8]? = []
            for try await chunk in execution.standardOutput {
                chunk.withUnsafeBytes { stdout?.append(contentsOf: $0) }
                if (stdout?.count ?? 0) > Self.outputLimit {
                    try? execution.send(signal: .kill, toProcessGroup: true)
                    stdout = nil
                }
            }
            await inputWritten
            return (stdout, try await stderrTail)
        }
        // Nothing the program started outlives its job. This waits until the program has been
        // reaped: a SIGKILL that reaches a process between closing its pipes and becoming a
        // zombie would turn its exit code into a kill. A group id is not handed to a new process
        // while any member of the group lives, so this reaches only what the program left behind.
        kill(-result.processIdentifier.value, SIGKILL)
        let (stdout, stderrTail) = result.closureResult
        guard let stdout else { return .outputTooLarge }
        return .ended(result.terminationStatus, stdout: stdout, stderrTail: stderrTail)
    }

    /// Reads stderr to its end: progress lines go to `progress`, and the last `limit` bytes of
    /// everything else are returned.
    private static func read(
        errors stream: SubprocessOutputSequence, keeping limit: Int, progress: (Int, Int) -> Void
    ) async throws -> [UInt8] {
        var kept: [UInt8] = []
        var line: [UInt8] = []
        func end(_ line: [UInt8], newline: Bool) {
            if let (step, total) = progressLine(line) {
                progress(step, total)
            } else {
                kept += line
                if newline { kept.append(0x0a) }
                if kept.count > limit * 2 { kept.removeFirst(kept.count - limit) }
            }
        }
        for try await chunk in stream {
            chunk.withUnsafeBytes { bytes in
                for byte in bytes {
                    if byte == 0x0a {
                        end(line, newline: true)
                        line.removeAll(keepingCapacity: true)
                    } else {
                        line.append(byte)
                        // A line this long is no progress line: keep it as text.
                        if line.count > limit {
                            end(line, newline: false)
                            line.removeAll(keepingCapacity: true)
                        }
                    }
                }
            }
        }
        end(line, newline: false)
        return Array(kept.suffix(limit))
    }

    /// `progress STEP/TOTAL`, with 0 ≤ STEP and 1 ≤ TOTAL; anything else is not a progress line.
    public static func progressLine(_ line: [UInt8]) -> (step: Int, total: Int)? {
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        guard text.hasPrefix("progress ") else { return nil }
        let parts = text.dropFirst("progress ".count).split(separator: "/")
        guard parts.count == 2, let step = Int(parts[0]), let total = Int(parts[1]), step >= 0, total >= 1 else { return nil }
        return (step, total)
    }

    /// Splits a command line like a POSIX shell would for words and quotes (no expansions).
    static func split(_ line: String) throws -> [String] {
        var words: [String] = []
        var current = ""
        var inWord = false
        var quote: Character?
        var escaped = false
        for ch in line {
            if escaped { current.append(ch); escaped = false; inWord = true; continue }
            if ch == "\\" && quote != "'" { escaped = true; continue }
            if let q = quote {
                if ch == q { quote = nil } else { current.append(ch) }
                continue
            }
            if ch == "'" || ch == "\"" { quote = ch; inWord = true; continue }
            if ch == " " || ch == "\t" {
                if inWord { words.append(current); current = ""; inWord = false }
                continue
            }
            current.append(ch)
            inWord = true
        }
        if quote != nil { throw ImageGenerationError.permanent("the generator command has an unclosed quote") }
        if inWord { words.append(current) }
        return words
    }
}
