import Foundation
import Postgres

/// The overview's reads, each answered from an index or from the folded counts, so that its
/// cost does not grow with the number of jobs (a dashboard reads it once a second).
enum OverviewSQL: StatementCatalog {
    /// One snapshot, read-only, and a short statement timeout: a slow overview is a bug to
    /// see, never a load to carry.
    static func snapshot() -> PGQuery {
        statement("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    }

    static func timeout() -> PGQuery {
        statement("SET LOCAL statement_timeout = '2s'")
    }

    /// Per priority: claimable jobs (folded counts plus unfolded deltas, as positions count
    /// them), jobs waiting at a gate (counted up to `gatedCap` in all), running jobs, and when
    /// the job next in claim order was submitted.
    static func counts(gatedCap: Int) -> PGQuery {
        statement("""
            WITH claimable AS (
                SELECT priority, sum(n)::bigint AS n
                FROM (SELECT priority, n FROM job_counts_hour WHERE metric = 0
                      UNION ALL
                      SELECT priority, n FROM job_count_deltas WHERE metric = 0) c
                GROUP BY priority
            ), gated AS (
                SELECT priority, count(*) AS n
                FROM (SELECT priority FROM jobs WHERE status = 'pending' AND tag IS NULL LIMIT \(gatedCap + 1)) g
                GROUP BY priority
            ), running AS (
                SELECT priority, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY priority
            )
            SELECT p.priority, coalesce(c.n, 0) AS claimable, coalesce(g.n, 0) AS gated, coalesce(r.n, 0) AS running,
                   (SELECT j.created_at FROM jobs j
                    WHERE j.status = 'pending' AND j.tag IS NOT NULL AND j.priority = p.priority
                    ORDER BY j.tag, j.seq LIMIT 1) AS head_created_at,
                   now() AS read_at
            FROM unnest(enum_range(NULL::job_priority)) AS p(priority)
            LEFT JOIN claimable c USING (priority)
            LEFT JOIN gated g USING (priority)
            LEFT JOIN running r USING (priority)
            ORDER BY p.priority
            """)
    }

    /// Completions per minute over the last hour, from the folded counts and the deltas.
    static func completedPerMinute() -> PGQuery {
        statement("""
            SELECT minute, sum(n)::bigint AS n
            FROM (SELECT minute, n FROM job_counts_minute
                  WHERE metric = 1 AND minute >= date_trunc('minute', now()) - interval '59 minutes'
                  UNION ALL
                  SELECT date_trunc('minute', second), n FROM job_count_deltas
                  WHERE metric = 1 AND second >= date_trunc('minute', now()) - interval '59 minutes') t
            GROUP BY minute
            ORDER BY minute
            """)
    }

    /// Running jobs, longest-running first (bounded by the fleet's slots; `jobs_running`).
    static func running(limit: Int) -> PGQuery {
        statement("""
            SELECT \(unsafeSQL: JobSQL.jobColumns) FROM jobs j WHERE j.status = 'running' ORDER BY j.started_at, j.seq LIMIT \(limit)
            """)
    }

    /// The next jobs in claim order (`jobs_claim`).
    static func nextUp(limit: Int) -> PGQuery {
        statement("""
            SELECT \(unsafeSQL: JobSQL.jobColumns) FROM jobs j
            WHERE j.status = 'pending' AND j.tag IS NOT NULL ORDER BY j.priority, j.tag, j.seq LIMIT \(limit)
            """)
    }

    /// The jobs that finished last (`jobs_finished`).
    static func recentlyFinished(limit: Int) -> PGQuery {
        statement("""
            SELECT \(unsafeSQL: JobSQL.jobColumns) FROM jobs j WHERE j.finished_at IS NOT NULL ORDER BY j.finished_at DESC LIMIT \(limit)
            """)
    }

    static func paused() -> PGQuery {
        statement("SELECT kind FROM job_pauses ORDER BY kind")
    }
}
