// imagejobs-chaos: the fault harness. Runs real `imagejobs worker` processes against a real
// PostgreSQL, injects faults on a seeded schedule (kill -9, SIGSTOP/SIGCONT, pg_ctl restart -m
// fast, pg_ctl stop -m immediate, pg_terminate_backend), then checks the jobs table and the
// workers' execution log and prints the figures. Exits non-zero when an invariant fails.
//
//   imagejobs-chaos --bin PATH --pg-ctl "scripts/db.sh ctl" [--jobs 5000] [--workers 4] [--seed N]
//                   [--scenarios clean,mix,outage,restart,zombie,soak] [--soak-jobs 20000]
import Foundation
import JobEngine
import TestSupport
import Logging
import Postgres

#if canImport(Glibc)
import Glibc
#endif

/// Prints a line at once (the harness's output interleaves with long waits).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

struct Options {
    /// The drills' worker, `imagejobs-drill-worker`.
    var workerBin = ""
    var pgCtl = "scripts/db.sh ctl"
    var jobs = 5000
    var workers = 4
    var seed: UInt64 = UInt64(Date().timeIntervalSince1970)
    var scenarios = ["clean", "mix", "outage", "restart", "zombie", "soak"]
    var url = ProcessInfo.processInfo.environment["DATABASE_URL"] ?? ""
    var soakJobs = 20_000

    init() {
        var args = CommandLine.arguments.dropFirst()
        while let a = args.popFirst() {
            switch a {
            case "--worker-bin": workerBin = args.popFirst() ?? ""
            case "--pg-ctl": pgCtl = args.popFirst() ?? ""
            case "--jobs": jobs = Int(args.popFirst() ?? "") ?? jobs
            case "--workers": workers = Int(args.popFirst() ?? "") ?? workers
            case "--seed": seed = UInt64(args.popFirst() ?? "") ?? seed
            case "--scenarios": scenarios = (args.popFirst() ?? "").split(separator: ",").map(String.init)
            case "--soak-jobs": soakJobs = Int(args.popFirst() ?? "") ?? soakJobs
            default: fatalError("unknown argument \(a)")
            }
        }
    }
}

var parsedOptions = Options()
/// Canaries: a password in every worker's connection URL (the cluster trusts local
/// connections, so it is sent nowhere) and a prompt in every job; neither may appear in any
/// worker's log, whatever faults the drill injects.
let canaryPassword = "canary-pw-\(parsedOptions.seed)"
let canaryPrompt = "canary prompt \(parsedOptions.seed) of a red fox"
if var components = URLComponents(string: parsedOptions.url), components.password == nil, components.scheme?.hasPrefix("postgres") == true {
    components.password = canaryPassword
    parsedOptions.url = components.string ?? parsedOptions.url
}
let options = parsedOptions
let quiet = TestLog.quiet
let lease = 5.0, heartbeat = 1.0, sweep = 0.5
let rescueBound = lease + sweep + 1.0
final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return list }
}
let failures = Failures()

func check(_ ok: Bool, _ what: String) {
    say("  \(ok ? "ok  " : "FAIL") \(what)")
    if !ok { failures.add(what) }
}

/// Runs a shell command to completion (posix_spawn and waitpid: Foundation's Process can stall
/// when used from several threads at once, and the fleet's supervisor uses it on its own).
@discardableResult
func sh(_ command: String) -> Int32 {
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(command + " >/dev/null 2>&1"), nil]
    defer { argv.forEach { free($0) } }
    guard posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno != EINTR { return 0 }  // reaped elsewhere
    }
    return (status >> 8) & 0xff
}

func now() -> Double { Date().timeIntervalSince1970 }

/// Faults injected, with their times, so duplicates can be explained.
final class FaultLog: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var kills: [(pid: Int32, at: Double)] = []
    private(set) var stops: [(pid: Int32, from: Double, to: Double)] = []
    private(set) var outages: [(from: Double, to: Double)] = []
    func kill(_ pid: Int32) { lock.lock(); kills.append((pid, now())); lock.unlock() }
    /// A worker found dead without a kill (noticed within the supervisor's 0.3 s tick).
    func crash(_ pid: Int32) { lock.lock(); crashes.append((pid, now())); lock.unlock() }
    private(set) var crashes: [(pid: Int32, at: Double)] = []
    func stop(_ pid: Int32, _ from: Double, _ to: Double) { lock.lock(); stops.append((pid, from, to)); lock.unlock() }
    func outage(_ from: Double, _ to: Double) { lock.lock(); outages.append((from, to)); lock.unlock() }

    /// Whether an attempt that started on `pid` at `start` could have been lost by a fault
    /// before `next` (the next attempt's start).
    func explains(pid: Int32, start: Double, next: Double) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return kills.contains { $0.pid == pid && $0.at >= start - 0.05 && $0.at <= next }
            || crashes.contains { $0.pid == pid && $0.at >= start - 0.05 && $0.at <= next + 0.5 }
            || stops.contains { $0.pid == pid && $0.to >= start && $0.from <= next }
            || outages.contains { $0.to >= start && $0.from <= next }
    }
}

/// A fleet of worker processes.
final class Fleet: @unchecked Sendable {
    let url: String
    let log: String
    var processes: [Process] = []
    var exitedUnexpectedly = 0
    let lock = NSLock()

    init(url: String, log: String) {
        self.url = url
        self.log = log
    }

    var extraArguments: [String] = []
    var concurrency = 4
    var logLevel = "debug"
    private var spawned = 0

    /// The worker logs (one file per process, at debug level: the most a log can say).
    var logFiles: [String] {
        lock.lock()
        defer { lock.unlock() }
        return (0..<spawned).map { "\(log).stderr.\($0)" }
    }

    func spawn() -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: options.workerBin)
        p.arguments = [
            "--execution-log", log, "--concurrency", "\(concurrency)", "--poll-interval", "0.2",
            "--heartbeat-interval", "\(heartbeat)", "--lease", "\(lease)", "--sweep-interval", "\(sweep)", "--stuck-grace", "2",
            "--backoff-base", "0.2", "--shutdown-grace", "1", "--max-connections", "3", "--database-url", url, "--log-level", logLevel,
        ] + extraArguments
        p.standardOutput = FileHandle.nullDevice
        lock.lock()
        let path = "\(log).stderr.\(spawned)"
        spawned += 1
        lock.unlock()
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = FileHandle(forWritingAtPath: path) ?? FileHandle.nullDevice
        p.standardError = handle
        try! p.run()
        try? handle.close()
        lock.lock()
        processes.append(p)
        lock.unlock()
        return p
    }

    var alive: [Process] {
        lock.lock()
        defer { lock.unlock() }
        return processes.filter(\.isRunning)
    }

    private var supervising = true

    /// Like a process supervisor: a worker that exits (killed, or crashed by a poison job) is
    /// replaced 0.3 s later, until ``stopAll()``.
    func supervise(target: Int, faults: FaultLog) {
        Thread { [self] in
            var seenExited = Set<Int32>()
            while true {
                usleep(300_000)
                lock.lock()
                let keepGoing = supervising
                let running = processes.filter(\.isRunning).count
                let exited = processes.filter { !$0.isRunning }.map(\.processIdentifier)
                lock.unlock()
                if !keepGoing { return }
                // A worker that died on its own (the poison job exits its process) loses its
                // other in-flight jobs too: that is a fault like a kill.
                for pid in exited where !seenExited.contains(pid) {
                    seenExited.insert(pid)
                    if !faults.kills.contains(where: { $0.pid == pid }) { faults.crash(pid) }
                }
                for _ in 0..<max(0, target - running) { _ = spawn() }
            }
        }.start()
    }

    func stopAll() {
        lock.lock()
        supervising = false
        lock.unlock()
        usleep(350_000)
        for p in alive { p.terminate() }
        for p in processes { p.waitUntilExit() }
    }
}

struct Attempt {
    var attempt: Int
    var pid: Int32
    var start: Double
    var outcome: String?
}

func readLog(_ path: String) -> [UUID: [Attempt]] {
    var jobs: [UUID: [Attempt]] = [:]
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
    for line in text.split(separator: "\n") {
        let f = line.split(separator: " ")
        guard f.count == 5, let id = UUID(uuidString: String(f[1])), let attempt = Int(f[2]), let pid = Int32(f[3]),
            let t = Double(f[4])
        else { continue }
        if f[0] == "start" {
            jobs[id, default: []].append(Attempt(attempt: attempt, pid: pid, start: t, outcome: nil))
        } else if let i = jobs[id]?.lastIndex(where: { $0.attempt == attempt }) {
            jobs[id]![i].outcome = String(f[0])
        }
    }
    return jobs
}

func schemaURL(_ schema: String) -> String {
    TestDatabase.connectionString(options.url, schema: schema)
}

func makePool(_ schema: String, max: Int = 3) -> PGPool {
    var c = PGConfiguration(connectionString: options.url)
    c.searchPath = schema
    c.applicationName = "imagejobs-chaos"
    c.connectTimeoutSeconds = 2
    return PGPool(configuration: c, options: .init(maxConnections: max, acquireTimeout: .seconds(30)), logger: quiet)
}

/// Retries `body` while the database is away (the harness itself must survive the faults).
func retrying<T>(_ body: () async throws -> T) async throws -> T {
    var last: (any Error)?
    for _ in 0..<200 {
        do { return try await body() } catch {
            last = error
            try await Task.sleep(for: .milliseconds(100))
        }
    }
    throw last!
}

/// A scenario's fresh schema (migrated), a pool and queue on it, and its fleet (not started),
/// whose execution log starts empty.
func setUp(_ name: String) async throws -> (PGPool, JobQueue, Fleet) {
    let schema = "chaos_\(name)_\(options.seed)"
    let admin = makePool("public", max: 1)
    try await admin.query("DROP SCHEMA IF EXISTS \(identifier: schema) CASCADE")
    try await admin.query("CREATE SCHEMA \(identifier: schema)")
    await admin.close()
    let pool = makePool(schema)
    try await Migrator(pool: pool, logger: quiet).up()
    // Every fault drill runs with fair share (the default), a cap and a rate limit on, so
    // admission goes through the same faults as claims. The soak measures retention and bloat
    // with two conversations of 10,000 instant jobs each: under a cap of 4 those would run 8 at
    // a time, each slot refilled by an admission round, for ten minutes; it runs without limits.
    if name != "soak" {
        try await JobQueue(pool: pool, logger: quiet).setLimits(
            .kind("test.script"), perGroup: .set(drillCap), rate: .set(JobRate(count: drillRate, period: .seconds(1))))
    }
    let logPath = "/tmp/imagejobs-chaos-\(name)-\(options.seed).log"
    unlink(logPath)
    return (pool, JobQueue(pool: pool, logger: quiet), Fleet(url: schemaURL(schema), log: logPath))
}

func submit(_ queue: JobQueue, count: Int, rng: inout SeededRandom, extra: [JobSpec] = []) async throws -> [UUID] {
    var ids: [UUID] = []
    var i = 0
    while i < count {
        let conversation = UUID()
        let chunk = min(500, count - i)
        let specs = (0..<chunk).map { _ -> JobSpec in
            var params: [String: JSONValue] = ["sleep_ms": .number(Double(Int.random(in: 20...80, using: &rng))), "prompt": .string(canaryPrompt)]
            if Int.random(in: 0..<100, using: &rng) == 0 { params["fail_attempts"] = 1 }
            return JobSpec(kind: "test.script", params: params, groupID: conversation, maxRetries: 5)
        }
        ids += try await queue.submitBatch(specs, groupID: conversation).jobIDs
        i += chunk
    }
    for spec in extra { ids.append(try await queue.submit(spec).job.id) }
    return ids
}

/// Samples the oldest running heartbeat against the rescue bound while `running` holds.
final class Sampler: @unchecked Sendable {
    var maxStuck = 0
    var maxBackendsPerWorker = 0
    var samples = 0
    var stop = false

    func run(_ pool: PGPool) async {
        while !stop {
            if let n = try? await pool.scalar(as: Int.self,
                "SELECT count(*) FROM jobs WHERE status = 'running' AND now() - greatest(heartbeat_at, pg_postmaster_start_time()) > \(rescueBound) * interval '1 second'")
            {
                maxStuck = max(maxStuck, n)
                samples += 1
            }
            if let n = try? await pool.scalar(as: Int.self,
                "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM pg_stat_activity WHERE application_name LIKE 'imagejobs-worker-%' GROUP BY application_name) x")
            {
                maxBackendsPerWorker = max(maxBackendsPerWorker, n)
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }
}

func waitAllFinal(_ pool: PGPool, count: Int, cap: Double) async -> Bool {
    let deadline = now() + cap
    while now() < deadline {
        if let n = try? await pool.scalar(as: Int.self, "SELECT count(*) FROM jobs WHERE status IN ('completed', 'error', 'cancelled')"), n == count {
            return true
        }
        try? await Task.sleep(for: .milliseconds(200))
    }
    return false
}

/// The invariants over the jobs table and the execution log.
/// The drills' cap (running jobs of one conversation) and rate (starts per second).
let drillCap = 4
let drillRate = 1000

/// The limits held, on the jobs' last attempts (database clock): no conversation had more than
/// the cap running at once, and no second more than the rate's starts.
func checkLimits(_ pool: PGPool, label: String) async throws {
    let row = try await retrying {
        try await pool.query(
            """
            SELECT coalesce(max((SELECT count(*) FROM jobs o
                                 WHERE o.group_id = j.group_id AND o.started_at <= j.started_at AND o.finished_at > j.started_at)), 0)::int AS overlap,
                   coalesce(max((SELECT count(*) FROM jobs o
                                 WHERE o.started_at >= j.started_at AND o.started_at < j.started_at + interval '1 second')), 0)::int AS window
            FROM jobs j WHERE j.started_at IS NOT NULL
            """)[0]
    }
    let overlap: Int = try row.decode("overlap"), window: Int = try row.decode("window")
    say("  \(label): at most \(overlap) of one conversation's jobs ran at once (cap \(drillCap)), \(window) started in the busiest second (rate \(drillRate)/s)")
    check(overlap <= drillCap, "\(label): the cap of \(drillCap) per conversation held")
    check(window <= drillRate, "\(label): the rate of \(drillRate)/s held")
}

func verify(_ pool: PGPool, ids: [UUID], logPath: String, faults: FaultLog, expectDuplicates: Bool, label: String) async throws -> (duplicates: Int, explained: Int) {
    let rows = try await retrying { try await pool.query("SELECT id, status::text AS status, attempt, retry_count, max_retries, errors::text AS errors FROM jobs") }
    var status: [UUID: (String, Int)] = [:]
    for row in rows { status[try row.decode("id")] = (try row.decode("status"), try row.decode("attempt")) }
    let lost = ids.filter { !(["completed", "error", "cancelled"].contains(status[$0]?.0 ?? "")) }.count
    let log = readLog(logPath)
    var staleAccepted = 0
    var duplicates = 0
    var explained = 0
    for id in ids {
        // In claim order (attempt numbers), not log order: a worker stopped between its claim
        // and its handler's first line writes that line after SIGCONT, later than the next
        // attempt's.
        let attempts = (log[id] ?? []).sorted { ($0.attempt, $0.start) < ($1.attempt, $1.start) }
        if let (s, attempt) = status[id], s == "completed", let maxStarted = attempts.map(\.attempt).max(), maxStarted > attempt {
            staleAccepted += 1  // a later attempt ran, yet an earlier one's completion stands
        }
        for (k, a) in attempts.enumerated() where k + 1 < attempts.count {
            if a.outcome == "fail" || a.outcome == "crash" { continue }  // retried by design
            duplicates += 1
            if faults.explains(pid: a.pid, start: min(a.start, attempts[k + 1].start), next: max(a.start, attempts[k + 1].start)) {
                explained += 1
            } else {
                say(String(format: "    unexplained: job %@ attempt %d on pid %d started %.2f (%@), next attempt %.2f s later on pid %d",
                           id.uuidString.prefix(8).description, a.attempt, a.pid, a.start, a.outcome ?? "no outcome",
                           attempts[k + 1].start - a.start, attempts[k + 1].pid))
            }
        }
    }
    say("  \(label): \(ids.count) jobs, \(lost) lost, \(staleAccepted) stale writes accepted, \(duplicates) duplicate executions (\(explained) explained by a fault)")
    try await checkLimits(pool, label: label)
    check(lost == 0, "\(label): 0 jobs lost (every job final)")
    check(staleAccepted == 0, "\(label): 0 writes accepted from a stale attempt")
    if expectDuplicates {
        check(duplicates == explained, "\(label): every duplicate execution explained by an overlapping fault")
    } else {
        check(duplicates == 0, "\(label): 0 duplicate executions without faults")
    }
    return (duplicates, explained)
}

/// Reads every worker log of a fleet: the canaries must be absent, and the logs not empty
/// (so the check could have failed).
func checkLogs(_ fleet: Fleet, label: String) {
    var lines = 0, hits = 0, bytes = 0
    for path in fleet.logFiles {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
        bytes += text.utf8.count
        for line in text.split(separator: "\n") {
            lines += 1
            if line.contains(canaryPassword) || line.contains(canaryPrompt) || line.contains("red fox") { hits += 1 }
        }
        unlink(path)
    }
    check(lines > 0 && hits == 0, "\(label): no canary password or prompt in \(lines) lines (\(bytes / 1024) KiB) of worker logs at \(fleet.logLevel) level")
}

func scenarioClean() async throws {
    say("== clean: \(options.jobs) jobs, \(options.workers) workers, no faults")
    var rng = SeededRandom(seed: options.seed)
    let (pool, queue, fleet) = try await setUp("clean")
    let logPath = fleet.log
    let ids = try await submit(queue, count: options.jobs, rng: &rng)
    let start = now()
    for _ in 0..<options.workers { _ = fleet.spawn() }
    let done = await waitAllFinal(pool, count: ids.count, cap: 120)
    let elapsed = now() - start
    check(done, "clean: drained in \(String(format: "%.1f", elapsed)) s (\(Int(Double(ids.count) / elapsed)) jobs/s)")
    check(fleet.alive.count == options.workers, "clean: no worker exited")
    fleet.stopAll()
    checkLogs(fleet, label: "clean")
    _ = try await verify(pool, ids: ids, logPath: logPath, faults: FaultLog(), expectDuplicates: false, label: "clean")
    await pool.close()
}

func scenarioMix() async throws {
    say("== mix: \(options.jobs) jobs, \(options.workers) workers, seed \(options.seed)")
    var rng = SeededRandom(seed: options.seed &+ 1)
    let (pool, queue, fleet) = try await setUp("mix")
    let logPath = fleet.log
    let poison = JobSpec(kind: "test.script", params: ["crash_attempts": -1], groupID: UUID(), maxRetries: 2)
    let ids = try await submit(queue, count: options.jobs, rng: &rng, extra: [poison])
    let poisonID = ids.last!
    let faults = FaultLog()
    let sampler = Sampler()
    let sampling = Task { await sampler.run(pool) }
    for _ in 0..<options.workers { _ = fleet.spawn() }
    fleet.supervise(target: options.workers, faults: faults)
    let start = now()
    // The schedule, printed so a failing run can be replayed with the same --seed.
    var schedule: [(Double, String)] = []
    var t = 1.0
    while t < 16 { schedule.append((t, "kill -9 a random worker (its supervisor restarts it)")); t += Double.random(in: 1.5...2.5, using: &rng) }
    schedule.append((3.5, "pg_ctl restart -m fast"))
    schedule.append((6.5, "pg_ctl stop -m immediate; 3 s down; start"))
    schedule.append((11, "SIGSTOP a worker for 8 s (past its lease), then SIGCONT"))
    schedule.append((13.5, "pg_terminate_backend of every worker backend"))
    schedule.sort { $0.0 < $1.0 }
    for (at, what) in schedule { say(String(format: "  t=%5.1f s  %@", at, what)) }
    var stopped: Process?
    for (at, what) in schedule {
        let wait = start + at - now()
        if wait > 0 { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
        say(String(format: "  [%5.1f s] %@", now() - start, what))
        switch what {
        case let w where w.hasPrefix("kill -9"):
            let candidates = fleet.alive.filter { $0 !== stopped }
            if let victim = candidates.randomElement(using: &rng) {
                faults.kill(victim.processIdentifier)
                kill(victim.processIdentifier, SIGKILL)  // the supervisor starts a new one
            }
        case let w where w.hasPrefix("pg_ctl restart"):
            let from = now()
            _ = sh("\(options.pgCtl) restart -m fast")
            faults.outage(from, now())
        case let w where w.hasPrefix("pg_ctl stop"):
            let from = now()
            _ = sh("\(options.pgCtl) stop -m immediate")
            try await Task.sleep(for: .seconds(3))
            _ = sh("\(options.pgCtl) start")
            faults.outage(from, now())
        case let w where w.hasPrefix("SIGSTOP"):
            if let victim = fleet.alive.randomElement(using: &rng) {
                stopped = victim
                let from = now()
                kill(victim.processIdentifier, SIGSTOP)
                try await Task.sleep(for: .seconds(8))
                kill(victim.processIdentifier, SIGCONT)
                faults.stop(victim.processIdentifier, from, now())
                stopped = nil
            }
        default:
            let from = now()
            _ = try? await pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'imagejobs-worker-%'")
            faults.outage(from, now() + 0.5)
        }
    }
    say("  schedule done at t=\(String(format: "%.1f", now() - start)) s; waiting for the queue to drain")
    let done = await waitAllFinal(pool, count: ids.count, cap: 180)
    say("  drained: \(done)")
    sampler.stop = true
    await sampling.value
    let elapsed = now() - start
    let kills = faults.kills.count
    check(done, "mix: drained in \(String(format: "%.1f", elapsed)) s with \(kills) kill -9, 1 fast restart, 1 crash with 3 s down, 1 SIGSTOP past the lease, 1 mass pg_terminate_backend")
    check(sampler.maxStuck == 0, "mix: 0 jobs stuck in running past heartbeat timeout + sweep interval (\(sampler.samples) samples, bound \(rescueBound) s)")
    let exitedOtherwise = faults.crashes
    // The poison job's own crashes end their worker by design.
    let poisonRow = try await retrying { try await pool.query("SELECT status::text AS s, attempt, retry_count FROM jobs WHERE id = \(poisonID)")[0] }
    let poisonAttempts: Int = try poisonRow.decode("attempt")
    check(try poisonRow.decode("s", as: String.self) == "error" && poisonAttempts == 3,
          "mix: the poison job ended in error after exactly its 2 retries (\(poisonAttempts) attempts)")
    check(exitedOtherwise.count == poisonAttempts, "mix: no worker exited except by an injected kill or the poison job (\(exitedOtherwise.count) exits)")
    fleet.stopAll()
    checkLogs(fleet, label: "mix")
    let (duplicates, _) = try await verify(pool, ids: ids, logPath: logPath, faults: faults, expectDuplicates: true, label: "mix")
    say("  mix: \(duplicates) duplicate executions for \(kills) kills (each kill can cost its worker's in-flight slots, 4)")
    await pool.close()
}

func scenarioOutage() async throws {
    say("== outage: the database down 10 s under a backlog")
    var rng = SeededRandom(seed: options.seed &+ 2)
    let (pool, queue, fleet) = try await setUp("outage")
    let logPath = fleet.log
    let ids = try await submit(queue, count: 3000, rng: &rng)
    let sampler = Sampler()
    let sampling = Task { await sampler.run(pool) }
    for _ in 0..<options.workers { _ = fleet.spawn() }
    try await Task.sleep(for: .seconds(1.5))
    let from = now()
    _ = sh("\(options.pgCtl) stop -m fast")
    try await Task.sleep(for: .seconds(10))
    _ = sh("\(options.pgCtl) start")
    let up = now()
    let faults = FaultLog()
    faults.outage(from, up)
    // When did each worker claim again?
    var firstClaims: [Double] = []
    let logStart = up
    let deadline = up + 15
    while now() < deadline {
        let log = readLog(logPath)
        var byPid: [Int32: Double] = [:]
        for attempts in log.values { for a in attempts where a.start >= logStart { byPid[a.pid] = min(byPid[a.pid] ?? .infinity, a.start) } }
        if byPid.count >= options.workers { firstClaims = byPid.values.map { $0 - up }; break }
        try await Task.sleep(for: .milliseconds(100))
    }
    let done = await waitAllFinal(pool, count: ids.count, cap: 120)
    sampler.stop = true
    await sampling.value
    check(fleet.alive.count == options.workers, "outage: no worker exited during 10 s without a database")
    // A worker's reconnect delay is full-jitter up to 2 s (WorkerConfiguration.maxReconnectDelay):
    // one delay to reach the server again, and sometimes a second after a pooled connection the
    // restart broke is handed out once and fails. So within two delays and a second of work.
    let slowest = firstClaims.max() ?? .infinity
    check(firstClaims.count == options.workers && slowest <= 5, "outage: every worker claimed again within 5 s of the server accepting connections (slowest \(String(format: "%.2f", slowest)) s)")
    check(sampler.maxBackendsPerWorker <= 4, "outage: connections per worker stayed within the cap of 3 + 1 listener (max seen \(sampler.maxBackendsPerWorker))")
    check(done, "outage: the backlog drained")
    fleet.stopAll()
    checkLogs(fleet, label: "outage")
    _ = try await verify(pool, ids: ids, logPath: logPath, faults: faults, expectDuplicates: true, label: "outage")
    await pool.close()
}

func scenarioRestart() async throws {
    say("== restart: a fast restart shorter than the lease during steady load")
    var rng = SeededRandom(seed: options.seed &+ 3)
    let (pool, queue, fleet) = try await setUp("restart")
    let logPath = fleet.log
    let ids = try await submit(queue, count: 3000, rng: &rng)
    for _ in 0..<options.workers { _ = fleet.spawn() }
    try await Task.sleep(for: .seconds(1.5))
    let from = now()
    _ = sh("\(options.pgCtl) restart -m fast")
    let down = now() - from
    let done = await waitAllFinal(pool, count: ids.count, cap: 120)
    fleet.stopAll()
    checkLogs(fleet, label: "restart")
    let rescued = try await retrying { try await pool.scalar(as: Int.self, "SELECT count(*) FROM jobs WHERE errors::text LIKE '%worker lost%'") }
    check(done, "restart: drained")
    check(rescued == 0, "restart: a \(String(format: "%.2f", down)) s restart rescued nothing (\(rescued) rescues)")
    let (duplicates, _) = try await verify(pool, ids: ids, logPath: logPath, faults: FaultLog(), expectDuplicates: true, label: "restart")
    check(duplicates == 0, "restart: it duplicated nothing")
    await pool.close()
}

func scenarioZombie() async throws {
    say("== zombie: a worker stopped past its lease, then resumed")
    let (pool, queue, fleet) = try await setUp("zombie")
    let logPath = fleet.log
    let zombie = fleet.spawn()
    try await Task.sleep(for: .seconds(1))
    let id = try await queue.submit(JobSpec(kind: "test.script", params: ["sleep_ms": 4000], groupID: UUID())).job.id
    let started = await waitFor { (try? await queue.job(id).status) == .running }
    kill(zombie.processIdentifier, SIGSTOP)
    let from = now()
    _ = fleet.spawn()  // the survivor
    let finished = await waitFor(timeout: 20) { (try? await queue.job(id).status) == .completed }
    let rescuedIn = now() - from
    kill(zombie.processIdentifier, SIGCONT)
    try await Task.sleep(for: .seconds(3))  // the zombie wakes, heartbeats and finds it lost the job
    let job = try await queue.job(id)
    let attempts = readLog(logPath)[id] ?? []
    check(started && finished, "zombie: the stopped worker's job was rescued and finished by another worker (\(String(format: "%.1f", rescuedIn)) s after SIGSTOP)")
    // The zombie may write its own start line only after SIGCONT (it was stopped between the
    // claim and the log write), so look up the completing attempt, not the last line.
    let completing = attempts.first { $0.attempt == job.attempt }
    check(job.attempt == 2 && completing != nil && completing?.pid != zombie.processIdentifier,
          "zombie: the completion is the second attempt's, on the other worker")
    check(zombie.isRunning, "zombie: the resumed worker is still running")
    let after = try await queue.job(id)
    check(after.status == .completed && after.attempt == 2 && after.finishedAt == job.finishedAt, "zombie: after SIGCONT its writes changed 0 rows")
    fleet.stopAll()
    checkLogs(fleet, label: "zombie")
    await pool.close()
}

/// A long run with retention on: every job must run exactly once, every finished job must be
/// pruned, and the table must not grow past a bound of its size when the backlog was enqueued.
func scenarioSoak() async throws {
    let n = options.soakJobs
    say("== soak: \(n) jobs through \(options.workers) workers (concurrency 16 each), pruned 3 s after they finish")
    let (pool, queue, fleet) = try await setUp("soak")
    let logPath = fleet.log
    var ids = Set<UUID>()
    ids.reserveCapacity(n)
    let enqueueStart = now()
    while ids.count < n {
        let conversation = UUID()
        let specs = (0..<min(10_000, n - ids.count)).map { _ in
            JobSpec(kind: "test.script", params: ["prompt": .string(canaryPrompt)], groupID: conversation)
        }
        for id in try await queue.submitBatch(specs, groupID: conversation).jobIDs { ids.insert(id) }
    }
    let enqueueSeconds = now() - enqueueStart
    try await pool.query("ANALYZE jobs")
    let sizeQuery: PGQuery = "SELECT pg_total_relation_size('jobs') AS size, coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass), 0) AS dead"
    let full: Int = try await pool.query(sizeQuery)[0].decode("size")
    say(String(format: "  enqueued %d jobs in %.1f s (%.0f/s); jobs table with its indexes: %.1f MiB", n, enqueueSeconds, Double(n) / enqueueSeconds, Double(full) / 1_048_576))

    fleet.concurrency = 16
    fleet.logLevel = "info"
    fleet.extraArguments = ["--retention", "3s"]
    let start = now()
    for _ in 0..<options.workers { _ = fleet.spawn() }
    var peak = full, peakDead = 0, lastReport = start
    var drained = false
    while now() - start < max(120, Double(n) / 500) {
        let row = try await retrying { try await pool.query(sizeQuery)[0] }
        peak = max(peak, try row.decode("size"))
        peakDead = max(peakDead, try row.decode("dead"))
        let unfinished = try await retrying { try await pool.scalar(as: Int.self, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") }
        if now() - lastReport >= 30 {
            lastReport = now()
            say(String(format: "  t=%4.0f s  %d unfinished, table %.1f MiB", now() - start, unfinished, Double(peak) / 1_048_576))
        }
        if unfinished == 0 { drained = true; break }
        try await Task.sleep(for: .seconds(1))
    }
    let elapsed = now() - start
    let pruned = await waitFor(timeout: 60) { (try? await pool.scalar(as: Int.self, "SELECT count(*) FROM jobs")) == 0 }
    let final: Int = try await pool.query(sizeQuery)[0].decode("size")
    fleet.stopAll()
    checkLogs(fleet, label: "soak")

    // Every job ran exactly once: one start and one end line each, nothing else.
    var ends: [UUID: UInt8] = [:]
    ends.reserveCapacity(n)
    var starts = 0, other = 0
    if let file = fopen(logPath, "r") {
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, file) > 0 {
            let f = String(cString: line!).split(separator: " ")
            guard f.count == 5, let id = UUID(uuidString: String(f[1])) else { continue }
            switch f[0] {
            case "start": starts += 1
            case "end": ends[id, default: 0] += 1
            default: other += 1
            }
        }
        free(line)
        fclose(file)
    }
    unlink(logPath)
    let once = ids.allSatisfy { ends[$0] == 1 }
    check(drained, String(format: "soak: %d jobs drained in %.0f s (%.0f jobs/s)", n, elapsed, Double(n) / elapsed))
    check(once && starts == n && other == 0 && ends.count == n, "soak: every job ran exactly once (\(starts) starts, \(ends.count) jobs ended, \(other) failures)")
    check(pruned, "soak: retention deleted every finished job (0 rows left)")
    // A short soak drains before autovacuum's first pass (every row then has its three versions:
    // submit, claim, completion, about 2.5–2.8 ×); a long one must show vacuum reusing the space.
    let bound = n >= 200_000 ? 3.5 : 4.5
    check(Double(peak) <= bound * Double(full), String(format: "soak: the table peaked at %.1f MiB, %.2f × its size with the whole backlog enqueued (bound %.1f ×); %d dead tuples at most; %.1f MiB at the end",
                                   Double(peak) / 1_048_576, Double(peak) / Double(full), bound, peakDead, Double(final) / 1_048_576))
    await pool.close()
}

/// Whether `condition` holds within `timeout` seconds.
func waitFor(timeout: Double = 10, _ condition: () async -> Bool) async -> Bool {
    (try? await eventually(timeout: .milliseconds(Int64(timeout * 1000)), condition)) ?? false
}

guard !options.workerBin.isEmpty, !options.url.isEmpty else {
    say("usage: DATABASE_URL=… imagejobs-chaos --worker-bin PATH/imagejobs-drill-worker --pg-ctl \"scripts/db.sh ctl\" [--jobs N] [--workers N] [--seed N]")
    exit(2)
}
say("imagejobs-chaos: seed \(options.seed) (replay with --seed \(options.seed)); lease \(lease) s, heartbeat \(heartbeat) s, sweep \(sweep) s")
let started = now()
for scenario in options.scenarios {
    switch scenario {
    case "clean": try await scenarioClean()
    case "mix": try await scenarioMix()
    case "outage": try await scenarioOutage()
    case "restart": try await scenarioRestart()
    case "zombie": try await scenarioZombie()
    case "soak": try await scenarioSoak()
    default: fatalError("unknown scenario \(scenario)")
    }
}
say(String(format: "imagejobs-chaos: %d checks failed, %.0f s", failures.all.count, now() - started))
exit(failures.all.isEmpty ? 0 : 1)
