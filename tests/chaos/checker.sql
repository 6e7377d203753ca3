-- Read-only queries the chaos checker runs against a scenario's database.

-- name: ledger_ids
SELECT event_id FROM ingest_idempotency WHERE site_id = $1

-- name: ledger_duplicates
SELECT event_id, count(*) AS n FROM ingest_idempotency
WHERE site_id = $1 GROUP BY event_id HAVING count(*) > 1

-- name: ledger_count
SELECT count(*) FROM ingest_idempotency WHERE site_id = $1

-- name: outbox_depth
SELECT count(*) FROM ingest_fallback_buffer

-- name: invoice_drift
-- Invoice minus ledger per billing month, for the site: a cross-check of `opsmantik reconcile`.
WITH ledger AS (
    SELECT billing_month AS month, count(*) AS events, sum(quantity) AS quantity
    FROM ingest_idempotency WHERE site_id = $1 GROUP BY billing_month
)
SELECT coalesce(sum(abs(coalesce(u.events, 0) - coalesce(l.events, 0))), 0)::bigint AS event_drift,
       coalesce(sum(abs(coalesce(u.quantity, 0) - coalesce(l.quantity, 0))), 0)::bigint AS quantity_drift
FROM (SELECT month, events, quantity FROM site_usage_monthly WHERE site_id = $1) u
FULL JOIN ledger l ON l.month = u.month

-- name: dead_letters
SELECT count(*) FROM ingest_dead_letter WHERE site_id = $1
