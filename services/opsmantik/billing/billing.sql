-- Month close, statements, voids and the dispute export (services/opsmantik/billing/).

-- name: close_lock_exclusive
-- The close lock. Every worker batch and every void takes it shared as the first statement of its
-- transaction (services/opsmantik/worker/ledger.sql `close_lock_shared`, same key), so a close waits for
-- in-flight batches and no batch can book into a month while it is being closed.
SELECT pg_advisory_xact_lock(5124400005)

-- name: close_lock_shared
SELECT pg_advisory_xact_lock_shared(5124400005)

-- name: close_month
INSERT INTO closed_months (month) VALUES ($1::date) ON CONFLICT (month) DO NOTHING RETURNING closed_at

-- name: closed_at
SELECT closed_at FROM closed_months WHERE month = $1::date

-- name: closed_months_from
SELECT month FROM closed_months WHERE month >= $1::date ORDER BY month

-- name: sites_to_state
-- Every site with ledger rows, void entries or an invoice row in the month and no statement yet.
SELECT site_id FROM (
    -- the month's own partition, then the late rows of earlier months (the partial index of 0009)
    SELECT DISTINCT site_id FROM ingest_idempotency WHERE usage_month = $1::date AND billing_month = $1::date
    UNION SELECT DISTINCT site_id FROM ingest_idempotency WHERE billing_month = $1::date AND billing_month <> usage_month
    UNION SELECT site_id FROM billing_voids WHERE booked_month = $1::date
    UNION SELECT site_id FROM site_usage_monthly WHERE month = $1::date
) AS active
WHERE NOT EXISTS (SELECT 1 FROM billing_statements s WHERE s.site_id = active.site_id AND s.month = $1::date)
ORDER BY site_id

-- name: site_rows
-- The canonical order: event_id bytewise (COLLATE "C"), the order verify checks. The rows billed in
-- the month: its own partition's (usage_month = billing_month) and the late rows of earlier months
-- (billing_month <> usage_month: the partial index of migration 0009).
SELECT * FROM (
    SELECT site_id, event_id, event_type, occurred_at, usage_month, billing_month, quantity,
           billing_class, path, received_at, ledgered_at, kafka_partition, kafka_offset,
           properties::text AS properties
    FROM ingest_idempotency WHERE site_id = $1::uuid AND usage_month = $2::date AND billing_month = $2::date
    UNION ALL
    SELECT site_id, event_id, event_type, occurred_at, usage_month, billing_month, quantity,
           billing_class, path, received_at, ledgered_at, kafka_partition, kafka_offset,
           properties::text AS properties
    FROM ingest_idempotency
    WHERE site_id = $1::uuid AND billing_month = $2::date AND billing_month <> usage_month
) AS billed
ORDER BY event_id COLLATE "C"

-- name: site_late_rows
-- site_rows without the month's own partition (archived: entries reads it from the file).
SELECT site_id, event_id, event_type, occurred_at, usage_month, billing_month, quantity,
       billing_class, path, received_at, ledgered_at, kafka_partition, kafka_offset,
       properties::text AS properties
FROM ingest_idempotency
WHERE site_id = $1::uuid AND billing_month = $2::date AND billing_month <> usage_month
ORDER BY event_id COLLATE "C"

-- name: site_voids
SELECT site_id, event_id, billed_month, booked_month, quantity, billing_class, reason, voided_by, voided_at
FROM billing_voids WHERE site_id = $1::uuid AND booked_month = $2::date
ORDER BY event_id COLLATE "C"

-- name: invoice_row
SELECT events, quantity, overlimit_events, overlimit_quantity
FROM site_usage_monthly WHERE site_id = $1::uuid AND month = $2::date

-- name: insert_statement
INSERT INTO billing_statements (site_id, month, ledger_rows, ledger_quantity, late_rows, voids,
    voided_quantity, events, quantity, overlimit_events, overlimit_quantity, sha256, closed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (site_id, month) DO NOTHING

-- name: statements
SELECT s.*, sites.name FROM billing_statements s LEFT JOIN sites USING (site_id)
WHERE s.month = $1::date ORDER BY s.site_id

-- name: statement
SELECT * FROM billing_statements WHERE site_id = $1::uuid AND month = $2::date

-- name: ledger_entry
-- An event_id is unique within its dedupe scope (migration 0009); should it have been reused
-- months apart, the newest event is the one a void names.
SELECT billing_month, quantity, billing_class FROM ingest_idempotency
WHERE site_id = $1::uuid AND event_id = $2::text
ORDER BY usage_month DESC LIMIT 1

-- name: site_archived_months
-- The archived usage months (`opsmantik archive`) whose rows include the site's: the manifest's
-- totals name every (site, billing month) of the archived partition.
SELECT a.month FROM ledger_archives a
WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(a.manifest -> 'totals', '[]'::jsonb)) AS t
              WHERE t ->> 'site_id' = $1::uuid::text)
ORDER BY a.month

-- name: existing_void
SELECT voided_at, voided_by, reason FROM billing_voids WHERE site_id = $1::uuid AND event_id = $2::text

-- name: insert_void
INSERT INTO billing_voids (site_id, event_id, billed_month, booked_month, quantity, billing_class,
                           reason, voided_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (site_id, event_id) DO NOTHING
RETURNING voided_at

-- name: book_void
-- Takes the voided event off the invoice of the booked month (a negative adjustment when the
-- event was billed in a closed month: the row of the first open month may not exist yet).
INSERT INTO site_usage_monthly AS u (site_id, month, events, quantity, overlimit_events, overlimit_quantity)
VALUES ($1, $2, -1, -$3::bigint, -$4::bigint, -$5::bigint)
ON CONFLICT (site_id, month) DO UPDATE
SET events = u.events - 1, quantity = u.quantity - $3::bigint,
    overlimit_events = u.overlimit_events - $4::bigint,
    overlimit_quantity = u.overlimit_quantity - $5::bigint, updated_at = now()
