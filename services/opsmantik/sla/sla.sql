-- The SLA report (services/opsmantik/sla/report.py) and maintenance windows (services/opsmantik/sla/maintenance.py).

-- name: site_rollup
-- Per site, the month's rollup, and the part of it inside an announced maintenance window (one
-- announced >= 48 h before it started; a minute bucket is inside when its start is in [starts, ends)).
WITH buckets AS (
    SELECT r.*, EXISTS (
        SELECT 1 FROM maintenance_windows w
        WHERE w.starts_at - w.created_at >= interval '48 hours'
          AND r.minute >= w.starts_at AND r.minute < w.ends_at) AS in_maintenance
    FROM sla_requests r
    WHERE r.minute >= $1 AND r.minute < $2 AND ($3::uuid IS NULL OR r.site_id = $3::uuid)
)
SELECT site_id,
       sum(received)::bigint AS received, sum(persisted)::bigint AS persisted,
       sum(errors_5xx)::bigint AS errors_5xx, sum(errors_503)::bigint AS errors_503,
       sum(rate_limited)::bigint AS rate_limited, sum(quota_exceeded)::bigint AS quota_exceeded,
       sum(invalid)::bigint AS invalid,
       coalesce(sum(received) FILTER (WHERE in_maintenance), 0)::bigint AS m_received,
       coalesce(sum(persisted) FILTER (WHERE in_maintenance), 0)::bigint AS m_persisted,
       coalesce(sum(rate_limited) FILTER (WHERE in_maintenance), 0)::bigint AS m_rate_limited,
       coalesce(sum(quota_exceeded) FILTER (WHERE in_maintenance), 0)::bigint AS m_quota_exceeded,
       coalesce(sum(invalid) FILTER (WHERE in_maintenance), 0)::bigint AS m_invalid
FROM buckets GROUP BY site_id ORDER BY site_id

-- name: site_names
SELECT site_id, name FROM sites WHERE site_id = ANY($1::uuid[])

-- name: windows_in
SELECT id, starts_at, ends_at, reason, created_at,
       starts_at - created_at >= interval '48 hours' AS announced
FROM maintenance_windows WHERE starts_at < $2 AND ends_at > $1 ORDER BY starts_at, id

-- name: dead_letters_accepted
-- Dead letters of messages the gateway had acknowledged (they carry its gateway_status): each is
-- an acknowledged event that never reached the ledger, i.e. data loss (seed §2.2).
SELECT site_id, count(*)::bigint AS lost
FROM ingest_dead_letter
WHERE created_at >= $1 AND created_at < $2
  AND site_id ~ '^[0-9a-fA-F-]{36}$'
  -- bytewise (a dead letter's payload need not be UTF-8); the gateway writes compact JSON
  AND (position('"gateway_status":"accepted"'::bytea IN payload) > 0
       OR position('"gateway_status":"overlimit"'::bytea IN payload) > 0
       OR position('"gateway_status":"degraded"'::bytea IN payload) > 0
       OR position('"gateway_status":"fallback"'::bytea IN payload) > 0)
GROUP BY site_id

-- name: add_window
INSERT INTO maintenance_windows (starts_at, ends_at, reason) VALUES ($1, $2, $3)
RETURNING id, starts_at, ends_at, reason, created_at

-- name: list_windows
SELECT id, starts_at, ends_at, reason, created_at,
       starts_at - created_at >= interval '48 hours' AS announced
FROM maintenance_windows WHERE $1::bool OR ends_at > now() ORDER BY starts_at, id
