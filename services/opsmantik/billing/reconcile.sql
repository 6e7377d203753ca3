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

-- name: compare_sites
-- compare_month for the sites $2 only (the periodic pass): each branch reads those sites' rows by
-- index (the month partition's primary key, the late-rows index, billing_voids_booked, the
-- invoice's primary key), so its cost follows their rows, not the number of sites.
WITH entries AS (
    SELECT site_id, 1 AS sign, quantity, billing_class
    FROM ingest_idempotency
    WHERE usage_month = $1::date AND billing_month = $1::date AND site_id = ANY($2::uuid[])
    UNION ALL
    SELECT site_id, 1, quantity, billing_class
    FROM ingest_idempotency
    WHERE billing_month = $1::date AND billing_month <> usage_month AND site_id = ANY($2::uuid[])
    UNION ALL
    SELECT site_id, -1, quantity, billing_class FROM billing_voids
    WHERE booked_month = $1::date AND site_id = ANY($2::uuid[])
), ledger AS (
    SELECT site_id, sum(sign) AS events, coalesce(sum(sign * quantity), 0) AS quantity,
           coalesce(sum(sign) FILTER (WHERE billing_class = 'overlimit'), 0) AS overlimit_events,
           coalesce(sum(sign * quantity) FILTER (WHERE billing_class = 'overlimit'), 0) AS overlimit_quantity
    FROM entries GROUP BY site_id
), invoice AS (
    SELECT site_id, events, quantity, overlimit_events, overlimit_quantity
    FROM site_usage_monthly WHERE month = $1::date AND site_id = ANY($2::uuid[])
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

-- name: archives_version
-- Changes whenever a month is archived (or an archive is removed): the archived totals are read again.
SELECT count(*) AS n, max(archived_at) AS latest FROM ledger_archives

-- name: pass_lock
-- One pass of a month at a time, over every worker and `opsmantik reconcile` (transaction-scoped).
SELECT pg_try_advisory_xact_lock(512440028, $1::int)

-- name: pass_lock_wait
SELECT pg_advisory_xact_lock(512440028, $1::int)

-- name: watermark
-- Where the next pass starts reading changed invoice rows. A change this pass does not see is made
-- by a transaction open now or begun later, and stamps updated_at with its now() (its start): so
-- from the oldest open transaction's start, and $1 s earlier still (a session of another role shows
-- no xact_start to a role without pg_read_all_stats).
SELECT least(clock_timestamp() - make_interval(secs => $1),
             (SELECT min(xact_start) FROM pg_stat_activity
              WHERE datname = current_database() AND backend_type = 'client backend'
                AND pid <> pg_backend_pid()))

-- name: month_state
SELECT month, run_at, full_at, checked_to, ledger_events FROM reconcile_months WHERE month = $1::date

-- name: changed_sites
-- The sites to compare again: their invoice row changed since the last pass (the worker's batch,
-- a void, a planted row), or the last pass found them drifting (a deleted row, a fix by hand).
SELECT site_id FROM site_usage_monthly WHERE updated_at >= $2 AND month = $1::date
UNION
SELECT site_id FROM reconcile_sites WHERE month = $1::date AND drifting

-- name: sites_state
SELECT site_id, ledger_events FROM reconcile_sites WHERE month = $1::date AND site_id = ANY($2::uuid[])

-- name: save_sites
INSERT INTO reconcile_sites AS r (month, site_id, ledger_events, ledger_quantity, ledger_overlimit_events,
    ledger_overlimit_quantity, invoice_events, invoice_quantity, invoice_overlimit_events,
    invoice_overlimit_quantity, checked_at)
SELECT $1::date, s, le, lq, loe, loq, ie, iq, ioe, ioq, $2::timestamptz
FROM unnest($3::uuid[], $4::bigint[], $5::numeric[], $6::bigint[], $7::numeric[], $8::bigint[],
            $9::numeric[], $10::bigint[], $11::numeric[]) AS t(s, le, lq, loe, loq, ie, iq, ioe, ioq)
ON CONFLICT (month, site_id) DO UPDATE SET
    ledger_events = EXCLUDED.ledger_events, ledger_quantity = EXCLUDED.ledger_quantity,
    ledger_overlimit_events = EXCLUDED.ledger_overlimit_events,
    ledger_overlimit_quantity = EXCLUDED.ledger_overlimit_quantity,
    invoice_events = EXCLUDED.invoice_events, invoice_quantity = EXCLUDED.invoice_quantity,
    invoice_overlimit_events = EXCLUDED.invoice_overlimit_events,
    invoice_overlimit_quantity = EXCLUDED.invoice_overlimit_quantity, checked_at = EXCLUDED.checked_at

-- name: forget_sites
DELETE FROM reconcile_sites WHERE month = $1::date

-- name: save_month
INSERT INTO reconcile_months AS m (month, run_at, full_at, checked_to, ledger_events)
VALUES ($1::date, $2, $2, $3, $4::numeric)
ON CONFLICT (month) DO UPDATE SET
    run_at = EXCLUDED.run_at, checked_to = EXCLUDED.checked_to,
    full_at = CASE WHEN $5 THEN EXCLUDED.full_at ELSE m.full_at END,
    ledger_events = CASE WHEN $5 THEN EXCLUDED.ledger_events ELSE m.ledger_events + EXCLUDED.ledger_events END

-- name: drifting_sites
SELECT r.site_id, s.name, r.ledger_events, r.ledger_quantity, r.ledger_overlimit_events,
       r.ledger_overlimit_quantity, r.invoice_events, r.invoice_quantity, r.invoice_overlimit_events,
       r.invoice_overlimit_quantity
FROM reconcile_sites r LEFT JOIN sites s USING (site_id)
WHERE r.month = $1::date AND r.drifting
ORDER BY r.site_id
