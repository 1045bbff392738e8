import Foundation
import Postgres

/// The statements of limits, pauses and the fair-share setting (migration 0016).
enum SchedulingSQL: StatementCatalog {
    /// Sets or removes one scope's limits: a `nil` flag keeps that setting, a flag with a `nil`
    /// value removes it. A scope left with no setting is deleted. A cap or rate set sends the
    /// scope's claimable jobs back to the admitter, so the new limit holds for them too.
    static func setLimits(
        kind: String?, groupID: UUID?, setsCap: Bool, cap: Int?, setsRate: Bool, rateCount: Int?, ratePeriodMs: Int64?,
        setsWeight: Bool, weight: Double?
    ) -> PGQuery {
        statement("""
        WITH upsert AS (
            INSERT INTO job_limits AS l (kind, group_id, per_group, rate_count, rate_period, weight)
            VALUES (\(kind)::text, \(groupID)::uuid, \(cap)::int, \(rateCount)::int,
                    \(ratePeriodMs)::bigint * interval '1 millisecond', \(weight)::float8)
            ON CONFLICT ON CONSTRAINT job_limits_scope DO UPDATE SET
                per_group = CASE WHEN \(setsCap) THEN excluded.per_group ELSE l.per_group END,
                rate_count = CASE WHEN \(setsRate) THEN excluded.rate_count ELSE l.rate_count END,
                rate_period = CASE WHEN \(setsRate) THEN excluded.rate_period ELSE l.rate_period END,
                weight = CASE WHEN \(setsWeight) THEN excluded.weight ELSE l.weight END,
                updated_at = now()
            RETURNING l.kind, l.group_id
        ), regated AS (
            UPDATE jobs j SET tag = NULL
            WHERE ((\(setsCap) AND \(cap)::int IS NOT NULL) OR (\(setsRate) AND \(rateCount)::int IS NOT NULL))
              AND j.status = 'pending' AND j.tag IS NOT NULL
              AND (\(kind)::text IS NULL OR j.kind = \(kind)::text)
              AND (\(groupID)::uuid IS NULL OR j.group_id = \(groupID)::uuid)
            RETURNING j.id
        )
        SELECT (SELECT count(*) FROM regated) AS regated
        """)
    }

    /// Deletes scopes that no longer set anything (after ``setLimits``, in its transaction).
    static func deleteEmptyLimits() -> PGQuery {
        statement("DELETE FROM job_limits WHERE per_group IS NULL AND rate_count IS NULL AND weight IS NULL")
    }

    static func limits() -> PGQuery {
        statement("""
        SELECT kind, group_id, per_group, rate_count, (extract(epoch FROM rate_period) * 1000)::bigint AS rate_period_ms, weight
        FROM job_limits ORDER BY group_id NULLS FIRST, kind NULLS FIRST
        """)
    }

    static func settings() -> PGQuery {
        statement("""
        SELECT s.fair_share, (extract(epoch FROM s.turn) * 1000)::bigint AS turn_ms,
               (SELECT coalesce(array_agg(kind ORDER BY kind), '{}') FROM job_pauses) AS paused
        FROM job_settings s
        """)
    }

    static func setFairShare(_ on: Bool) -> PGQuery {
        statement("UPDATE job_settings SET fair_share = \(on)")
    }

    /// Pauses a kind (`*`: every kind) and tells the workers, which leave it out of their
    /// claims from then on.
    static func pause(kind: String, channel: String) -> PGQuery {
        statement("""
        WITH added AS (INSERT INTO job_pauses (kind) VALUES (\(kind)) ON CONFLICT (kind) DO NOTHING RETURNING kind)
        SELECT kind, pg_notify(\(channel), 'pause') AS notified FROM added
        """)
    }

    /// Resumes a kind (`*`: lifts the queue-wide pause; nil: every pause) and wakes workers.
    static func resume(kind: String?, channel: String) -> PGQuery {
        statement("""
        WITH gone AS (DELETE FROM job_pauses WHERE \(kind)::text IS NULL OR kind = \(kind)::text RETURNING kind)
        SELECT count(*) AS resumed, CASE WHEN count(*) > 0 THEN (SELECT pg_notify(\(channel), 'pause')) END AS notified FROM gone
        """)
    }

    /// Whether a batch has recorded its end.
    static func batchFinished(id: UUID) -> PGQuery {
        statement("SELECT finished_at FROM batches WHERE id = \(id)")
    }
}
