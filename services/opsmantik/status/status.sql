-- The status page's queries. Run by the background refresher on its own connection, never per
-- request, and never on the ledger (ingest_idempotency): every table read here is small or read
-- through its primary key range (minute or day first).

-- name: recent_requests
SELECT coalesce(sum(requests), 0)::bigint AS requests, coalesce(sum(errors_5xx), 0)::bigint AS errors_5xx,
       coalesce(sum(within_500ms), 0)::bigint AS within_500ms,
       coalesce((SELECT sum(v::bigint) FROM slo_requests r2, jsonb_each_text(r2.events_by_status) AS e (k, v)
                 WHERE r2.minute >= $1), 0)::bigint AS captured
FROM slo_requests WHERE minute >= $1

-- name: recent_freshness
SELECT coalesce(sum(events) FILTER (WHERE minute >= $1), 0)::bigint AS events,
       coalesce(max(lag_max_ms) FILTER (WHERE minute >= $1 AND events > 0), 0)::float8 AS lag_max_ms,
       max(minute) FILTER (WHERE events > 0) AS last_minute
FROM slo_freshness WHERE minute >= $2

-- name: outbox_state
-- Pending rows counted up to a cap (a long outage can queue millions; the page needs "some").
SELECT (SELECT count(*) FROM (SELECT 1 FROM ingest_fallback_buffer WHERE parked_at IS NULL LIMIT 100000) p)
           AS pending,
       (SELECT received_at FROM ingest_fallback_buffer WHERE parked_at IS NULL ORDER BY id LIMIT 1) AS oldest,
       (SELECT count(*) FROM (SELECT 1 FROM ingest_fallback_buffer WHERE parked_at IS NOT NULL LIMIT 1000) p)
           AS parked

-- name: has_maintenance_windows
-- maintenance_windows comes from migration 0005 (the billing work); absent before it is applied.
SELECT to_regclass('maintenance_windows') IS NOT NULL

-- name: maintenance_windows
-- Active and upcoming windows, and those that ended in the last 7 days.
SELECT id, starts_at, ends_at, reason, created_at FROM maintenance_windows
WHERE ends_at >= $1::timestamptz - interval '7 days' ORDER BY starts_at LIMIT 20

-- name: incidents
-- Unresolved incidents, and those resolved in the last 14 days (the page's "past incidents").
SELECT id, name, impact, status, components, created_at, updated_at, resolved_at
FROM status_incidents
WHERE resolved_at IS NULL OR resolved_at >= $1::timestamptz - interval '14 days'
ORDER BY created_at DESC LIMIT 30

-- name: incident_updates
SELECT id, incident_id, status, body, created_at FROM status_incident_updates
WHERE incident_id = ANY($1::bigint[]) ORDER BY created_at DESC, id DESC

-- name: add_component_checks
INSERT INTO status_component_daily AS d (day, component, instance, checks, degraded, partial, major, maintenance)
SELECT $1::date, c, $2, 1, (s = 'degraded_performance')::int, (s = 'partial_outage')::int,
       (s = 'major_outage')::int, (s = 'under_maintenance')::int
FROM unnest($3::text[], $4::text[]) AS t (c, s)
ON CONFLICT (day, component, instance) DO UPDATE SET
    checks = d.checks + 1, degraded = d.degraded + EXCLUDED.degraded, partial = d.partial + EXCLUDED.partial,
    major = d.major + EXCLUDED.major, maintenance = d.maintenance + EXCLUDED.maintenance

-- name: daily_rollups
SELECT day, component, sum(checks)::bigint AS checks, sum(degraded)::bigint AS degraded,
       sum(partial)::bigint AS partial, sum(major)::bigint AS major, sum(maintenance)::bigint AS maintenance
FROM status_component_daily WHERE day >= $1 GROUP BY day, component

-- name: month_at_risk
-- Data-integrity signals the page can read cheaply: buffered events past the 24 h SLA, rows the
-- relay parked for an operator, and dead-lettered messages this month.
SELECT (SELECT count(*) FROM ingest_fallback_buffer WHERE parked_at IS NULL AND received_at < $3) AS outbox_overdue,
       (SELECT count(*) FROM ingest_fallback_buffer WHERE parked_at IS NOT NULL) AS parked,
       (SELECT count(*) FROM ingest_dead_letter WHERE created_at >= $1 AND created_at < $2) AS dead_letters

-- name: month_accuracy
-- The month's reconcile figures as the latest pass left them (the worker's periodic pass or
-- `opsmantik reconcile`: migration 0016): one row, and the drifting sites (normally none) by their
-- partial index; never a read of every site's result.
SELECT m.run_at, m.ledger_events::bigint AS ledger,
       coalesce((SELECT sum(abs(r.invoice_events - r.ledger_events)) FROM reconcile_sites r
                 WHERE r.month = m.month AND r.drifting), 0)::bigint AS drift
FROM reconcile_months m WHERE m.month = $1::date

-- name: open_incident
WITH i AS (
    INSERT INTO status_incidents (name, impact, status, components) VALUES ($1, $2, $3, $4::text[])
    RETURNING id, created_at
)
INSERT INTO status_incident_updates (incident_id, status, body, created_at)
SELECT id, $3, $5, created_at FROM i RETURNING incident_id

-- name: update_incident
-- Resolving sets resolved_at; an update after that reopens nothing (resolved is final).
UPDATE status_incidents SET status = $2, updated_at = now(), impact = coalesce($3, impact),
       resolved_at = CASE WHEN $2 = 'resolved' THEN now() END
WHERE id = $1 AND resolved_at IS NULL RETURNING id

-- name: add_incident_update
INSERT INTO status_incident_updates (incident_id, status, body) VALUES ($1, $2, $3) RETURNING id

-- name: list_incidents
SELECT id, name, impact, status, components, created_at, updated_at, resolved_at FROM status_incidents
WHERE $1 OR resolved_at IS NULL ORDER BY created_at DESC LIMIT 100

-- name: prune_component_daily
-- The page shows 90 days; keep a little more, drop the rest (the primary key starts with day).
DELETE FROM status_component_daily WHERE day < $1
