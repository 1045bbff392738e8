import Foundation
import JobQueue

#if canImport(Glibc)
import Glibc
#endif

/// Runs a program the operator names: the job's parameters as JSON on stdin (with the job id
/// and attempt), a PNG expected on stdout. A non-zero exit is a retryable failure whose stderr
/// tail becomes the message; exit code 65 is a permanent one. At the job's deadline (or on
/// cancellation) the program and every process it started are killed (its own process group).
public struct CommandGenerator: ImageGenerator {
    public let name = "command"
    /// The program and its arguments.
    public let arguments: [String]

    public init(commandLine: String) throws {
        let words = try Self.split(commandLine)
        guard !words.isEmpty else { throw ImageGenerationError.permanent("the generator command is empty") }
        arguments = words
    }

    public func generate(_ request: ImageRequest) async throws -> GeneratedImage {
        let p = request.parameters
        var input = p.jsonObject
        input["job_id"] = .string(request.jobID.uuidString.lowercased())
        input["attempt"] = .number(Double(request.attempt))
        let stdin = [UInt8](try JSONEncoder().encode(input))
        let child = ChildProcess()
        let arguments = self.arguments
        let timeout = max(0.1, request.remainingSeconds)
        let result: ChildProcess.Result = await withTaskCancellationHandler {
            await runBlocking(name: "command-gen") { child.run(arguments, stdin: stdin, timeout: timeout) }
        } onCancel: {
            child.kill()
        }
        switch result {
        case .failedToStart(let reason):
            throw ImageGenerationError.permanent("command: could not start \(arguments[0]): \(reason)")
        case .killed:
            if Task.isCancelled { throw CancellationError() }
            throw ImageGenerationError.retryable("command: \(arguments[0]) ran past the job's deadline and was killed")
        case .exited(let code, let out, let err):
            let tail = String(decoding: err.suffix(500), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if code == 65 { throw ImageGenerationError.permanent("command: exit 65: \(tail)") }
            if code != 0 { throw ImageGenerationError.retryable("command: exit \(code): \(tail)") }
            guard let info = PNG.inspect(out) else {
                throw ImageGenerationError.permanent("command: \(arguments[0]) wrote \(out.count) bytes to stdout that are not a valid PNG")
            }
            return GeneratedImage(png: out, width: info.width, height: info.height, backend: name, metadata: ["command": arguments[0]])
        }
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

/// A child process in its own process group, with pipes, killed as a group.
final class ChildProcess: @unchecked Sendable {
    enum Result {
        case exited(Int32, [UInt8], [UInt8])
        case killed
        case failedToStart(String)
    }

    private let lock = NSLock()
    private var pid: pid_t = 0
    private var killRequested = false

    func kill() {
        lock.lock()
        killRequested = true
        let pid = self.pid
        lock.unlock()
        if pid > 0 { Glibc.kill(-pid, SIGKILL) }
    }

    /// Blocking: runs on a thread of its own.
    func run(_ arguments: [String], stdin: [UInt8], timeout: Double) -> Result {
        // A program that exits without reading its input must not kill this process with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard pipe(&inPipe) == 0, pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { return .failedToStart("pipe failed") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        for fd in inPipe + outPipe + errPipe { posix_spawn_file_actions_addclose(&actions, fd) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let status = posix_spawnp(&child, arguments[0], &actions, &attributes, argv, environ)
        close(inPipe[0]); close(outPipe[1]); close(errPipe[1])
        guard status == 0 else {
            close(inPipe[1]); close(outPipe[0]); close(errPipe[0])
            return .failedToStart(String(cString: strerror(status)))
        }
        lock.lock()
        pid = child
        let early = killRequested
        lock.unlock()
        if early { Glibc.kill(-child, SIGKILL) }

        // Feed stdin and drain stdout/stderr without deadlock, until both close or time runs out.
        var written = 0
        var out: [UInt8] = [], err: [UInt8] = []
        var open = (stdin: true, out: true, err: true)
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        fcntl(inPipe[1], F_SETFL, fcntl(inPipe[1], F_GETFL) | O_NONBLOCK)
        if stdin.isEmpty { close(inPipe[1]); open.stdin = false }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while open.out || open.err {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { timedOut = true; break }
            var fds: [pollfd] = []
            if open.stdin { fds.append(pollfd(fd: inPipe[1], events: Int16(POLLOUT), revents: 0)) }
            if open.out { fds.append(pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0)) }
            if open.err { fds.append(pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0)) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(min(remaining, 0.2) * 1000))
            if ready < 0 && errno != EINTR { break }
            for fd in fds where fd.revents != 0 {
                if fd.fd == inPipe[1] {
                    let n = stdin[written...].withUnsafeBufferPointer { write(inPipe[1], $0.baseAddress, $0.count) }
                    if n > 0 { written += n }
                    if n < 0 && errno != EAGAIN || written == stdin.count { close(inPipe[1]); open.stdin = false }
                } else {
                    let n = read(fd.fd, &buffer, buffer.count)
                    if n > 0 {
                        if fd.fd == outPipe[0] { out += buffer[0..<n] } else if err.count < 1 << 20 { err += buffer[0..<n] }
                    } else if n == 0 || errno != EAGAIN && errno != EINTR {
                        if fd.fd == outPipe[0] { open.out = false } else { open.err = false }
                    }
                }
            }
            lock.lock()
            let killed = killRequested
            lock.unlock()
            if killed { timedOut = true; break }
        }
        if open.stdin { close(inPipe[1]) }
        close(outPipe[0]); close(errPipe[0])
        if timedOut { Glibc.kill(-child, SIGKILL) }
        var waitStatus: Int32 = 0
        while waitpid(child, &waitStatus, 0) < 0 && errno == EINTR {}
        lock.lock()
        pid = 0
        lock.unlock()
        if timedOut { return .killed }
        if waitStatus & 0x7f != 0 { return .killed }  // ended by a signal
        return .exited((waitStatus >> 8) & 0xff, out, err)
    }
}
