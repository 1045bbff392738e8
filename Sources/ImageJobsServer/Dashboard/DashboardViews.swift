import Foundation
import ImageJobs
import JobEngine
import Postgres

/// What the dashboard's templates show, worked out here so the templates stay logic-less.
/// Mustache reads stored properties only (by reflection), so every flag a template tests is
/// stored, not computed.

/// A job as a row of a table.
struct JobRowView {
    struct Progress { var step: Int; var total: Int }
    var id: String
    var shortID: String
    var kind: String
    var priority: String
    var status: String
    var progress: Progress?
    var time: String

    init(_ job: Job, time: Date?) {
        id = job.id.lowercasedString
        shortID = String(id.suffix(12))  // the random end: ids made in one millisecond share their start
        kind = job.kind
        priority = job.priority.rawValue
        status = job.status.rawValue
        progress = job.status == .running ? job.progress.map { Progress(step: $0.step, total: $0.total) } : nil
        self.time = time.map(ISO8601.format) ?? ""
    }
}

struct JobTableView {
    var name: String
    var title: String
    var timeLabel: String
    var jobs: [JobRowView]
    var hasJobs: Bool

    init(name: String, title: String, timeLabel: String, jobs: [JobRowView]) {
        (self.name, self.title, self.timeLabel, self.jobs, hasJobs) = (name, title, timeLabel, jobs, !jobs.isEmpty)
    }
}

struct OverviewView {
    struct Priority { var priority: String; var queued: Int; var held: String; var running: Int; var waiting: String }
    struct Paused { var kind: String; var name: String }
    struct Bar { var x: Int; var y: Int; var height: Int; var label: String }

    var readAt: String
    var csrf: String
    var priorities: [Priority]
    var paused: [Paused]
    var hasPaused: Bool
    var bars: [Bar]
    var chartLabel: String
    var tables: [JobTableView]

    init(_ overview: QueueOverview, csrf: String) {
        readAt = ISO8601.format(overview.readAt)
        self.csrf = csrf
        priorities = overview.priorities.map { p in
            Priority(
                priority: p.priority.rawValue, queued: p.queued,
                held: overview.heldCapped && p.held > 0 ? "\(p.held)+" : "\(p.held)", running: p.running,
                waiting: p.nextSubmittedAt.map { Self.age(overview.readAt.timeIntervalSince($0)) } ?? "–")
        }
        paused = overview.paused.map { Paused(kind: $0, name: $0 == allKinds ? "every kind" : $0) }
        hasPaused = !paused.isEmpty
        // One bar a minute, the current minute at the right, scaled to the busiest minute.
        let calendarMinute = floor(overview.readAt.timeIntervalSince1970 / 60) * 60
        let byMinute = Dictionary(overview.completedPerMinute.map { ($0.minute.timeIntervalSince1970, $0.completed) }, uniquingKeysWith: +)
        let peak = max(1, byMinute.values.max() ?? 0)
        bars = (0..<60).compactMap { slot -> Bar? in
            let minute = calendarMinute - Double(59 - slot) * 60
            guard let n = byMinute[minute], n > 0 else { return nil }
            let height = max(1, Int((Double(n) / Double(peak) * 96).rounded()))
            return Bar(x: slot * 12, y: 100 - height, height: height, label: "\(ISO8601.format(Date(timeIntervalSince1970: minute))): \(n) completed")
        }
        let total = overview.completedPerMinute.reduce(0) { $0 + $1.completed }
        chartLabel = "\(total) jobs completed in the last hour; the busiest minute \(byMinute.values.max() ?? 0)"
        tables = [
            JobTableView(name: "running", title: "Running", timeLabel: "Started", jobs: overview.running.map { JobRowView($0, time: $0.startedAt) }),
            JobTableView(name: "next", title: "Next in claim order", timeLabel: "Submitted", jobs: overview.nextUp.map { JobRowView($0, time: $0.createdAt) }),
            JobTableView(
                name: "finished", title: "Finished last", timeLabel: "Finished",
                jobs: overview.recentlyFinished.map { JobRowView($0, time: $0.finishedAt) }),
        ]
    }

    /// "4 s", "3 min", "2 h", "5 d".
    static func age(_ seconds: Double) -> String {
        let s = max(0, Int(seconds))
        if s < 120 { return "\(s) s" }
        if s < 7200 { return "\(s / 60) min" }
        if s < 172_800 { return "\(s / 3600) h" }
        return "\(s / 86400) d"
    }
}

struct JobsView {
    struct Status { var value: String; var label: String; var selected: Bool }
    var statuses: [Status]
    var conversation: String
    var batch: String
    var kind: String
    var search: String
    var until: String
    var order: String
    var table: JobTableView
    /// The next page's address, when there is one.
    var older: String?
    var newest: String?
    /// Showing jobs in error: offer to retry them all (the form counts first).
    var canRetryAll: Bool
    var csrf: String

    init(_ page: JobListPage, filter: JobListFilter, until: String?, continued: Bool, csrf: String) {
        let status = filter.status
        statuses = [Status(value: "", label: "any", selected: status == nil)]
            + JobStatus.allCases.map { Status(value: $0.rawValue, label: $0.rawValue, selected: $0 == status) }
        conversation = filter.groupID?.lowercasedString ?? ""
        batch = filter.batchID?.lowercasedString ?? ""
        kind = filter.kind ?? ""
        search = filter.search ?? ""
        self.until = until ?? ""
        let byFinish = filter.groupID == nil && filter.batchID == nil && status?.isFinal == true
        let filtered = filter.kind != nil || filter.search != nil
        let from = continued ? "older than the last page's" : until.map { "before \($0)" } ?? "of the newest"
        order = "\(page.jobs.count) jobs \(from), \(byFinish ? "by finish time" : "by submit time")"
            + (filtered ? "; \(page.read) read to find them (at most \(JobQueue.listScan) a page: kind and words have no index)." : ".")
        table = JobTableView(
            name: "jobs", title: "Jobs", timeLabel: byFinish ? "Finished" : "Submitted",
            jobs: page.jobs.map { JobRowView($0, time: byFinish ? $0.finishedAt : $0.createdAt) })
        var query = [("status", status?.rawValue), ("conversation", filter.groupID?.lowercasedString), ("batch", filter.batchID?.lowercasedString),
                     ("kind", filter.kind), ("q", filter.search)]
            .compactMap { name, value in value.map { "\(name)=\(Self.encode($0))" } }
        newest = continued ? "/jobs?" + query.joined(separator: "&") : nil
        if let next = page.next {
            query.append("before=\(next)")
            older = "/jobs?" + query.joined(separator: "&")
        }
        canRetryAll = status == .error && !page.jobs.isEmpty
        self.csrf = csrf
    }

    static func encode(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }
}

/// The count a bulk retry shows before it acts.
struct BulkRetryView {
    var count: Int
    var countText: String
    var none: Bool
    var conversation: String
    var batch: String
    var scope: String
    var back: String
    var csrf: String

    init(count: Int, limit: Int, conversation: UUID?, batch: UUID?, csrf: String) {
        self.count = count
        countText = count >= limit ? "The first \(limit)" : "\(count)"
        none = count == 0
        self.conversation = conversation?.lowercasedString ?? ""
        self.batch = batch?.lowercasedString ?? ""
        scope = [conversation.map { "conversation \($0.lowercasedString)" }, batch.map { "batch \($0.lowercasedString)" }]
            .compactMap { $0 }.joined(separator: ", ")
        if scope.isEmpty { scope = "the whole queue" }
        back = "/jobs?status=error" + Self.filters(conversation: conversation, batch: batch)
        self.csrf = csrf
    }

    /// The filters as the Jobs page's query adds them (`&conversation=…&batch=…`).
    static func filters(conversation: UUID?, batch: UUID?) -> String {
        (conversation.map { "&conversation=\($0.lowercasedString)" } ?? "") + (batch.map { "&batch=\($0.lowercasedString)" } ?? "")
    }
}

struct JobView {
    struct Progress { var step: Int; var total: Int; var text: String }
    struct Moment { var label: String; var at: String }
    struct Failure { var attempt: Int; var at: String; var message: String }
    struct Image { var width: Int; var height: Int }

    var id: String
    var status: String
    var csrf: String
    /// Whether the page follows the job's event stream (it can still change on its own).
    var live: Bool
    var position: String?
    var progress: Progress?
    var kind: String
    var priority: String
    var conversation: String
    var batch: String?
    var attempt: Int
    var retryCount: Int
    var maxRetries: Int
    var timeline: [Moment]
    var errorMessage: String?
    var canCancel: Bool
    var canRetry: Bool
    var actions: Bool
    var errors: [Failure]
    var hasErrors: Bool
    var image: Image?
    var params: String
    var deliveries: DeliveryTableView?

    init(_ job: Job, position: QueuePosition?, result: JobResultInfo?, deliveries: [WebhookDelivery], csrf: String) {
        id = job.id.lowercasedString
        status = job.status.rawValue
        self.csrf = csrf
        live = !job.status.isFinal
        if let position {
            if let wait = position.waiting {
                self.position = "waiting: \(wait.reason.rawValue)"
            } else if let place = position.position {
                self.position = "position \(place)"
            }
        }
        if job.status == .running {
            progress = job.progress.map { Progress(step: $0.step, total: $0.total, text: "step \($0.step) of \($0.total)") }
                ?? Progress(step: 0, total: 1, text: "started")
        }
        kind = job.kind
        priority = job.priority.rawValue
        conversation = job.groupID.lowercasedString
        batch = job.batchID?.lowercasedString
        attempt = job.attempt
        retryCount = job.retryCount
        maxRetries = job.maxRetries
        timeline = [("Submitted", job.createdAt), ("Started", job.startedAt), ("Finished", job.finishedAt)].compactMap { label, at in
            at.map { Moment(label: label, at: ISO8601.format($0)) }
        }
        errorMessage = job.errorMessage
        canCancel = !job.status.isFinal
        canRetry = job.status == .error
        actions = canCancel || canRetry
        errors = job.errors.map { Failure(attempt: $0.attempt, at: ISO8601.format($0.at), message: $0.message) }
        hasErrors = !errors.isEmpty
        if let result, result.contentType == "image/png" {
            image = Image(width: result.metadata["width"]?.intValue ?? 0, height: result.metadata["height"]?.intValue ?? 0)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        params = (try? encoder.encode(JSONValue.object(job.params))).map { String(decoding: $0, as: UTF8.self) } ?? ""
        self.deliveries = deliveries.isEmpty ? nil : DeliveryTableView(deliveries)
    }
}

/// Webhook deliveries as a table: what was sent where, and how its attempts went.
struct DeliveryTableView {
    struct Row {
        var id: String
        var shortID: String
        var event: String
        var host: String
        var subjectLink: String?
        var subjectShortID: String
        var status: String
        var attempts: Int
        var lastError: String
        var createdAt: String
    }

    var rows: [Row]
    var hasRows: Bool
    var count: Int

    init(_ deliveries: [WebhookDelivery]) {
        rows = deliveries.map { d in
            let subject = d.subject?.lowercasedString
            return Row(
                id: d.id.lowercasedString, shortID: String(d.id.lowercasedString.suffix(12)), event: d.event, host: d.host,
                subjectLink: subject.map { d.event.hasPrefix("batch.") ? "/jobs?batch=\($0)" : "/jobs/\($0)" },
                subjectShortID: subject.map { String($0.suffix(12)) } ?? "", status: d.status.rawValue, attempts: d.attempts,
                lastError: d.status == .completed ? "" : d.lastError ?? "", createdAt: ISO8601.format(d.createdAt))
        }
        hasRows = !rows.isEmpty
        count = rows.count
    }
}

/// A reporting view's rows as a table; ids link to the jobs they name.
struct ReportView {
    struct Cell { var text: String; var link: String? }
    struct Row { var cells: [Cell] }

    var title: String
    var note: String
    var columns: [String]
    var rows: [Row]
    var hasRows: Bool

    init(title: String, note: String, rows: PGRows) {
        self.title = title
        self.note = note
        columns = rows.columns.names
        self.rows = rows.map { row in
            Row(cells: rows.columns.names.indices.map { i in
                let text = Reports.text(row, i)
                return Cell(text: text, link: text.isEmpty ? nil : Self.link(column: rows.columns.names[i], value: text))
            })
        }
        hasRows = !self.rows.isEmpty
    }

    static func link(column: String, value: String) -> String? {
        switch column {
        case "conversation_id": "/jobs?conversation=\(value)"
        case "batch_id": "/jobs?batch=\(value)"
        case "job_id": "/jobs/\(value)"
        default: nil
        }
    }
}

/// Fair share, limits and pauses, as `imagejobs limits show` prints them.
struct SchedulingView {
    struct Limit { var scope: String; var perConversation: String; var rate: String; var weight: String }

    var fairShare: String
    var turn: String
    var limits: [Limit]
    var hasLimits: Bool
    var paused: [OverviewView.Paused]
    var hasPaused: Bool
    var csrf: String

    init(_ settings: SchedulingSettings, csrf: String) {
        fairShare = settings.fairShare ? "on: conversations take turns within a priority" : "off: strict oldest-first"
        turn = "\(settings.turn)"
        limits = settings.limits.map { l in
            let scope: String
            switch l.scope {
            case .queue: scope = "the queue"
            case .kind(let kind): scope = "kind \(kind)"
            case .group(let id): scope = "conversation \(id.lowercasedString)"
            }
            return Limit(
                scope: scope, perConversation: l.perGroup.map(String.init) ?? "–",
                rate: l.rate.map { "\($0.count) per \($0.period)" } ?? "–", weight: l.weight.map { "\($0)" } ?? "–")
        }
        hasLimits = !limits.isEmpty
        paused = settings.paused.map { OverviewView.Paused(kind: $0, name: $0 == allKinds ? "every kind" : $0) }
        hasPaused = !paused.isEmpty
        self.csrf = csrf
    }
}
