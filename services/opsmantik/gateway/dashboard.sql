-- The customer's dashboard (services/opsmantik/gateway/routes_dashboard.py). Every query reads one
-- site by primary-key prefix, or the last minutes of a rollup: cheap enough to poll every second.

-- name: site_usage
-- The site's limits and its invoice row of the month (zeros when none).
SELECT s.name, s.monthly_quota, s.hard_cap,
       coalesce(u.events, 0) AS events, coalesce(u.quantity, 0) AS quantity,
       coalesce(u.overlimit_events, 0) AS overlimit_events,
       coalesce(u.overlimit_quantity, 0) AS overlimit_quantity,
       u.updated_at
FROM sites s LEFT JOIN site_usage_monthly u ON u.site_id = s.site_id AND u.month = $2
WHERE s.site_id = $1

-- name: ledger_lag
-- The worker's freshness rollup (what /status reads): worst lag of the last minutes, all sites.
SELECT coalesce(max(lag_max_ms) FILTER (WHERE events > 0), 0)::float8 AS lag_max_ms,
       coalesce(sum(events), 0)::bigint AS events
FROM slo_freshness WHERE minute >= $1

-- name: outbox_pending
-- The site's events accepted while the broker was away and not yet relayed (counted up to 10,000).
SELECT count(*) FROM (
    SELECT 1 FROM ingest_fallback_buffer WHERE site_id = $1 AND parked_at IS NULL LIMIT 10000
) p

-- name: recent_dead_letters
SELECT event_id, reason, created_at FROM ingest_dead_letter
WHERE site_id = $1::uuid::text
ORDER BY created_at DESC, kafka_partition DESC, kafka_offset DESC LIMIT $2::int
