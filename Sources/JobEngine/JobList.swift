import Foundation
import Postgres

/// What a list of jobs selects; every filter is optional.
public struct JobListFilter: Sendable, Equatable {
    public var groupID: UUID?
    public var batchID: UUID?
    public var status: JobStatus?
    public var kind: String?
    /// A case-insensitive substring of the parameters' JSON (a word of a text parameter, say).
    public var search: String?

    public init(groupID: UUID? = nil, batchID: UUID? = nil, status: JobStatus? = nil, kind: String? = nil, search: String? = nil) {
        self.groupID = groupID
        self.batchID = batchID
        self.status = status
        self.kind = kind
        self.search = search
    }

    /// Whether the list is ordered by id alone (no group, batch, running or final status).
    var isOrderedByID: Bool { groupID == nil && batchID == nil && !(status == .running || status?.isFinal == true) }
}

/// Where a page of a list ended: the next page starts after it. Its text (``description``) is
/// opaque and safe in a URL.
public struct JobListCursor: Sendable, Equatable, LosslessStringConvertible {
    /// The last job's place in the list's order, as the database wrote it (exact to the
    /// microsecond), or `nil` for lists ordered by id alone.
    let at: String?
    let id: UUID

    init(at: String?, id: UUID) {
        self.at = at
        self.id = id
    }

    /// The place of a moment in any list's order: a page after it holds the jobs submitted
    /// (or, in a list by finish time, finished) before `date`.
    public init(before date: Date) {
        let ms = UInt64(max(0, date.timeIntervalSince1970 * 1000))
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: ms >> (40 - 8 * UInt64(i))) }
        bytes[6] = 0x70
        bytes[8] = 0x80
        at = PGTimestamp.format(date)
        id = UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                         bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    }

    public init?(_ description: String) {
        var base64 = description.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard description.count <= 200, let data = Data(base64Encoded: base64) else { return nil }
        let parts = String(decoding: data, as: UTF8.self).split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let id = UUID(uuidString: String(parts[1])) else { return nil }
        if parts[0].isEmpty {
            at = nil
        } else {
            guard PGTimestamp.parse(String(parts[0])) != nil else { return nil }
            at = String(parts[0])
        }
        self.id = id
    }

    public var description: String {
        Data("\(at ?? "")|\(id.uuidString)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

/// One page of a list of jobs.
public struct JobListPage: Sendable {
    public var jobs: [Job]
    /// Where the next page starts; `nil` when the list ends here.
    public var next: JobListCursor?
    /// How many jobs the page read to find `jobs`: with a kind or search filter, at most
    /// ``JobQueue/listScan`` a page.
    public var read: Int
}

extension JobQueue {
    /// The most jobs a page with a kind or search filter reads (neither has an index).
    public static let listScan = 10_000

    /// A page of jobs, most recent first: a group's or a batch's and running jobs by submit
    /// time, finished ones by finish time, the rest by id (time-ordered); each page costs the
    /// same at 1M jobs as at 10. With `kind` or `search`, a page reads at most ``listScan`` jobs
    /// in that order and returns those that match (fewer than `limit` does not mean the list
    /// ended: follow `next`).
    public func list(_ filter: JobListFilter, after cursor: JobListCursor? = nil, limit: Int = 50) async throws -> JobListPage {
        guard (1...10_000).contains(limit) else {
            throw JobQueueError(.invalidInput, "limit must be between 1 and 10000", field: "limit")
        }
        if let kind = filter.kind, !Self.isValidKind(kind) {
            throw JobQueueError(.invalidInput, "kind must be 1–64 lower-case letters, digits, '.', '_' or '-', starting with a letter", field: "kind")
        }
        if let search = filter.search, !(1...200).contains(search.count) || search.contains("\u{0}") {
            throw JobQueueError(.invalidInput, "search must be 1–200 characters", field: "search")
        }
        do {
            let rows = try await pool.query(JobSQL.list(filter, after: cursor, limit: limit, scan: Self.listScan))
            var jobs: [Job] = []
            var lastJob: JobListCursor?, lastRead: JobListCursor?
            var read = 0
            for row in rows {
                let place = JobListCursor(at: try row.decode("list_at"), id: try row.decode("id"))
                if try row.decode("list_end", as: Bool.self) {
                    read = try row.decode("list_n")
                    lastRead = place
                } else {
                    jobs.append(try JobSQL.decodeJob(row))
                    lastJob = place
                }
            }
            // A full page continues after its last job; a filtered page that found fewer but read
            // all it may continues after the last job it read.
            let scan = filter.kind != nil || filter.search != nil ? Self.listScan : limit
            let next = jobs.count == limit ? lastJob : read == scan ? lastRead : nil
            return JobListPage(jobs: jobs, next: next, read: read)
        } catch {
            throw JobQueueError.from(error)
        }
    }

    /// Jobs by group, batch and status, most recent first (the first page of
    /// ``list(_:after:limit:)``).
    public func list(groupID: UUID? = nil, batchID: UUID? = nil, status: JobStatus? = nil, limit: Int = 50) async throws -> [Job] {
        try await list(JobListFilter(groupID: groupID, batchID: batchID, status: status), limit: limit).jobs
    }
}
