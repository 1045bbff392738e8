import Foundation
import Postgres

/// The fleet-wide maintenance's statements: the sweep's lock, rescue and count folding, and
/// retention's prune.
enum MaintenanceSQL: StatementCatalog {
    /// Takes the fleet-wide sweep lock for the rest of the transaction, if no other process
    /// holds it: one process at a time sweeps and folds counts.
    /// The sweep's transaction also ends itself after 2 s idle: a sweeper frozen mid-transaction
    /// (SIGSTOP, a stalled host) would otherwise keep the fleet-wide lock, and with it every
    /// rescue, until its 60 s role timeout; the server ends its session and the next sweeper
    /// takes over.
    static func trySweepLock() -> PGQuery {
        statement("""
        SELECT pg_try_advisory_xact_lock(hashtext('imagejobs.sweep'), hashtext(current_schema())) AS ok,
               set_config('idle_in_transaction_session_timeout', '2000', true) AS idle_timeout
        """)
    }
    /// Takes the fleet-wide admitter's lock for the rest of the transaction, if no other process
    /// holds it (with the sweep's short idle limit, for the same reason).
    static func tryAdmitLock() -> PGQuery {
        statement("""
        SELECT pg_try_advisory_xact_lock(hashtext('imagejobs.admit'), hashtext(current_schema())) AS ok,
               set_config('idle_in_transaction_session_timeout', '2000', true) AS idle_timeout
        """)
    }

    /// One admission round (migration 0016): makes waiting jobs whose gates are open claimable
    /// and records finished batches.
    static func admit(limit: Int) -> PGQuery {
        statement("SELECT admitted, batches_finished FROM admit_jobs(\(limit))")
    }

    /// Rescues running jobs whose worker stopped heartbeating (`lease`) or that ran far past
    /// their deadline (`grace`). Run under ``trySweepLock()``; staleness counts from the later of the heartbeat and the server's start, so a
    /// short database restart rescues nothing; each row is re-checked under its lock.
    static func rescue(lease: Duration, grace: Duration, backoff: RetryBackoff, limit: Int) -> PGQuery {
        statement("""
        WITH stale AS MATERIALIZED (
            SELECT j.id, j.attempt,
                   now() > j.deadline_at + \(grace.milliseconds) * interval '1 millisecond' AS overdue
            FROM jobs j
            WHERE j.status = 'running'
              AND (now() - greatest(j.heartbeat_at, pg_postmaster_start_time()) > \(lease.milliseconds) * interval '1 millisecond'
                   OR now() > j.deadline_at + \(grace.milliseconds) * interval '1 millisecond')
            ORDER BY j.heartbeat_at
            LIMIT \(limit)
            FOR UPDATE OF j SKIP LOCKED
        ), decided AS (
            SELECT s.id, s.attempt, s.overdue, (s.overdue OR j.retry_count >= j.max_retries) AS final,
                   CASE WHEN s.overdue THEN 'timed out after ' || round(extract(epoch FROM j.timeout))::bigint || ' s'
                        ELSE 'worker lost: no heartbeat from ' || coalesce(j.worker_id, 'unknown worker') END AS msg
            FROM stale s JOIN jobs j ON j.id = s.id
        )
        UPDATE jobs j
        SET status = CASE WHEN d.final THEN 'error'::job_status ELSE 'pending'::job_status END,
            retry_count = CASE WHEN d.final THEN j.retry_count ELSE j.retry_count + 1 END,
            next_attempt_at = CASE WHEN d.final THEN j.next_attempt_at ELSE now() + \(unsafeSQL: JobSQL.backoffExpression(backoff)) END,
            tag = CASE WHEN d.final THEN j.tag ELSE \(unsafeSQL: JobSQL.returningTag) END,
            finished_at = CASE WHEN d.final THEN now() END,
            error_message = d.msg,
            errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(), 'message', d.msg, 'worker', j.worker_id,
                                                  'retried', NOT d.final, 'timed_out', d.overdue)
        FROM decided d
        WHERE j.id = d.id AND j.attempt = d.attempt AND j.status = 'running'
        RETURNING j.id, j.status, d.overdue
        """)
    }
    /// Folds the count deltas into the per-second, per-minute and per-hour tables, in one statement.
    static func foldCounts() -> PGQuery {
        statement("""
        WITH moved AS (
            DELETE FROM job_count_deltas RETURNING metric, priority, second, n
        ), per_second AS (
            SELECT metric, priority, second, sum(n)::bigint AS n FROM moved GROUP BY 1, 2, 3
        ), seconds AS (
            INSERT INTO job_counts_second AS c (metric, priority, second, n)
            SELECT metric, priority, second, n FROM per_second
            ON CONFLICT (metric, priority, second) DO UPDATE SET n = c.n + excluded.n
        ), minutes AS (
            INSERT INTO job_counts_minute AS c (metric, priority, minute, n)
            SELECT metric, priority, date_trunc('minute', second), sum(n) FROM per_second GROUP BY 1, 2, 3
            ON CONFLICT (metric, priority, minute) DO UPDATE SET n = c.n + excluded.n
        ), hours AS (
            INSERT INTO job_counts_hour AS c (metric, priority, hour, n)
            SELECT metric, priority, date_trunc('hour', second), sum(n) FROM per_second GROUP BY 1, 2, 3
            ON CONFLICT (metric, priority, hour) DO UPDATE SET n = c.n + excluded.n
        )
        SELECT count(*) AS folded FROM moved
        """)
    }
    /// Drops count rows that are zero (pending) or older than the reporting window (completions).
    static func trimCounts() -> PGQuery {
        statement("""
        WITH s AS (
            DELETE FROM job_counts_second
            WHERE (metric = 0 AND n = 0) OR (metric = 1 AND second < now() - interval '1 day')
        ), m AS (
            DELETE FROM job_counts_minute
            WHERE (metric = 0 AND n = 0) OR (metric = 1 AND minute < now() - interval '30 days')
        )
        DELETE FROM job_counts_hour
        WHERE (metric = 0 AND n = 0) OR (metric = 1 AND hour < now() - interval '30 days')
        """)
    }
    /// One page of retention (see migration 0007): finished jobs older than `olderThan`, their
    /// results, emptied batches and gone workers, at most `limit` of each.
    static func prune(olderThan: Duration, limit: Int, dryRun: Bool) -> PGQuery {
        statement("""
        SELECT p.jobs, p.results, p.batches, p.workers
        FROM prune_finished(\(olderThan.milliseconds) * interval '1 millisecond', \(limit), \(dryRun))
             AS p(jobs, results, batches, workers)
        """)
    }

    /// Prune pages give up on a row lock after a second rather than wait behind a claimer.
    static func pruneLockTimeout() -> PGQuery {
        statement("SET LOCAL lock_timeout = '1s'")
    }
}
