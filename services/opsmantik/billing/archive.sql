-- `opsmantik archive` (services/opsmantik/billing/archive.py).

-- name: is_closed
SELECT EXISTS (SELECT 1 FROM closed_months WHERE month = $1::date)

-- name: archive_of
SELECT month, location, rows, file_sha256, manifest, archived_at FROM ledger_archives WHERE month = $1::date

-- name: archives_between
SELECT month, location, rows, file_sha256, manifest FROM ledger_archives
WHERE month >= $1::date AND month <= $2::date ORDER BY month

-- name: billed_months
-- The billing months the partition's rows are billed in (late rows: a later one), per site.
-- Their totals go into the manifest: reconcile adds them to the ledger side of archived months.
SELECT site_id, billing_month, count(*) AS events, sum(quantity) AS quantity,
       count(*) FILTER (WHERE billing_class = 'overlimit') AS overlimit_events,
       coalesce(sum(quantity) FILTER (WHERE billing_class = 'overlimit'), 0) AS overlimit_quantity
FROM ingest_idempotency WHERE usage_month = $1::date
GROUP BY site_id, billing_month ORDER BY site_id, billing_month

-- name: open_billing_months
SELECT DISTINCT billing_month FROM ingest_idempotency i
WHERE usage_month = $1::date
  AND NOT EXISTS (SELECT 1 FROM closed_months c WHERE c.month = i.billing_month)
ORDER BY 1

-- name: missing_statements
SELECT DISTINCT i.site_id, i.billing_month FROM ingest_idempotency i
WHERE i.usage_month = $1::date
  AND NOT EXISTS (SELECT 1 FROM billing_statements s WHERE s.site_id = i.site_id AND s.month = i.billing_month)
ORDER BY 1, 2

-- name: partition_rows
-- The partition in the archive's order: site_id, then event_id bytewise (the canonical order).
SELECT site_id, event_id, event_type, occurred_at, usage_month, billing_month, quantity, billing_class,
       path, received_at, ledgered_at, kafka_partition, kafka_offset, properties::text AS properties
FROM ingest_idempotency WHERE usage_month = $1::date
ORDER BY site_id, event_id COLLATE "C"

-- name: statement_sha
SELECT sha256 FROM billing_statements WHERE site_id = $1::uuid AND month = $2::date

-- name: record_archive
INSERT INTO ledger_archives (month, location, rows, file_sha256, manifest) VALUES ($1, $2, $3, $4, $5::jsonb)

-- name: close_lock
-- The close lock, exclusive (as `billing close` takes it): no batch is mid-flight while the
-- partition is detached.
SELECT pg_advisory_xact_lock(5124400005)
