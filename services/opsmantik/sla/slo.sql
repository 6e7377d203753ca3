-- name: availability
SELECT coalesce(sum(requests), 0)::bigint AS requests, coalesce(sum(errors_5xx), 0)::bigint AS errors_5xx
FROM slo_requests WHERE minute >= $1 AND minute < $2

-- name: latency_windows
-- The p95 proxy: per 5-minute window, the share of requests answered within 500 ms.
SELECT date_bin('5 minutes', minute, $1) AS w, sum(requests)::bigint AS requests,
       sum(within_500ms)::bigint AS fast
FROM slo_requests WHERE minute >= $1 AND minute < $2 AND requests > 0 GROUP BY 1

-- name: captured
SELECT coalesce(sum(v::bigint), 0)::bigint AS captured
FROM slo_requests, jsonb_each_text(events_by_status) AS e (k, v)
WHERE minute >= $1 AND minute < $2

-- name: freshness
SELECT count(*) AS minutes, count(*) FILTER (WHERE lag_max_ms < 5000) AS fresh_minutes,
       coalesce(sum(events), 0)::bigint AS events, coalesce(sum(within_5s), 0)::bigint AS within_5s
FROM slo_freshness WHERE minute >= $1 AND minute < $2 AND events > 0

-- name: ledger_received
SELECT count(*) FROM ingest_idempotency WHERE received_at >= $1 AND received_at < $2

-- name: accuracy
SELECT (SELECT coalesce(sum(events), 0)::bigint FROM site_usage_monthly WHERE month = $1::date) AS invoice,
       (SELECT count(*) FROM ingest_idempotency WHERE usage_month = $1::date AND billing_month = $1::date)
       + (SELECT count(*) FROM ingest_idempotency WHERE billing_month = $1::date AND billing_month <> usage_month)
       - (SELECT count(*) FROM billing_voids WHERE booked_month = $1::date) AS ledger  -- net of voids

-- name: audit_month
-- The capture audit's verdict on the month (services/opsmantik/audit): counts and open findings.
SELECT (SELECT coalesce(sum(audited), 0) FROM audit_counts WHERE month = $1::date)::bigint AS audited,
       (SELECT coalesce(sum(ledgered), 0) FROM audit_counts WHERE month = $1::date)::bigint AS ledgered,
       (SELECT coalesce(sum(dead_lettered), 0) FROM audit_counts WHERE month = $1::date)::bigint
           AS dead_lettered,
       (SELECT count(*) FROM audit_findings
        WHERE month = $1::date AND kind = 'unaccounted' AND resolved_at IS NULL) AS unaccounted,
       (SELECT count(*) FROM audit_findings WHERE month = $1::date AND kind = 'breach') AS breaches,
       (SELECT max(updated_at) FROM audit_progress) AS updated_at
