-- name: compare_month
-- Ledger and invoice for one billing month, per site, read in one statement (one
-- snapshot), so a worker committing meanwhile cannot produce a false drift.
-- The ledger side is net of void entries booked in the month (docs/billing.md): a void takes its
-- event off the invoice of that month, or is a negative adjustment in the first open month.
WITH entries AS (
    SELECT site_id, 1 AS sign, quantity, billing_class
    FROM ingest_idempotency WHERE usage_month = $1::date AND billing_month = $1::date  -- the month's partition
    UNION ALL
    SELECT site_id, 1, quantity, billing_class  -- late rows of earlier months (partial index, 0009)
    FROM ingest_idempotency WHERE billing_month = $1::date AND billing_month <> usage_month
    UNION ALL
    SELECT site_id, -1, quantity, billing_class FROM billing_voids WHERE booked_month = $1::date
), ledger AS (
    SELECT site_id, sum(sign) AS events, coalesce(sum(sign * quantity), 0) AS quantity,
           coalesce(sum(sign) FILTER (WHERE billing_class = 'overlimit'), 0) AS overlimit_events,
           coalesce(sum(sign * quantity) FILTER (WHERE billing_class = 'overlimit'), 0) AS overlimit_quantity
    FROM entries GROUP BY site_id
), invoice AS (
    SELECT site_id, events, quantity, overlimit_events, overlimit_quantity
    FROM site_usage_monthly WHERE month = $1::date
)
SELECT site_id, s.name,
       coalesce(l.events, 0)::bigint AS ledger_events, coalesce(l.quantity, 0)::numeric AS ledger_quantity,
       coalesce(l.overlimit_events, 0)::bigint AS ledger_overlimit_events,
       coalesce(l.overlimit_quantity, 0)::numeric AS ledger_overlimit_quantity,
       coalesce(i.events, 0)::bigint AS invoice_events, coalesce(i.quantity, 0)::numeric AS invoice_quantity,
       coalesce(i.overlimit_events, 0)::bigint AS invoice_overlimit_events,
       coalesce(i.overlimit_quantity, 0)::numeric AS invoice_overlimit_quantity
FROM ledger l FULL JOIN invoice i USING (site_id)
LEFT JOIN sites s USING (site_id)
ORDER BY site_id

-- name: record_results
INSERT INTO reconcile_results (run_at, month, site_id, ledger_events, ledger_quantity, invoice_events,
    invoice_quantity, drift_events, drift_quantity, drift_overlimit_events, drift_overlimit_quantity)
SELECT $1::timestamptz, $2::date, s, le, lq, ie, iq, de, dq, doe, doq
FROM unnest($3::uuid[], $4::bigint[], $5::numeric[], $6::bigint[], $7::numeric[], $8::bigint[],
            $9::numeric[], $10::bigint[], $11::numeric[]) AS t(s, le, lq, ie, iq, de, dq, doe, doq)
ON CONFLICT DO NOTHING

-- name: archived_totals
-- The ledger side of rows billed in the month whose usage month was archived (opsmantik archive):
-- the per-site totals the archive recorded from the partition before dropping it.
SELECT (t ->> 'site_id')::uuid AS site_id, sum((t ->> 'events')::bigint)::bigint AS events,
       sum((t ->> 'quantity')::numeric) AS quantity,
       sum((t ->> 'overlimit_events')::bigint)::bigint AS overlimit_events,
       sum((t ->> 'overlimit_quantity')::numeric) AS overlimit_quantity
FROM ledger_archives a, jsonb_array_elements(coalesce(a.manifest -> 'totals', '[]'::jsonb)) AS t
WHERE t ->> 'billing_month' = to_char($1::date, 'YYYY-MM')
GROUP BY 1

-- name: has_archives
-- ledger_archives comes from migration 0009; a database before it has no archived month.
SELECT to_regclass('ledger_archives') IS NOT NULL
