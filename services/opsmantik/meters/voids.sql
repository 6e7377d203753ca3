-- A void applied to the meters (services/opsmantik/meters/voids.py), in the void's transaction.

-- name: voided_fact
-- The voided row as a meter reads it, with its void's booked month and its ledgered_at (which
-- meters counted it). The newest usage month first, as billing.sql ledger_entry picks it.
SELECT i.site_id, i.event_id, i.event_type, i.occurred_at, i.billing_month, i.quantity,
       i.properties::text AS properties, i.subject, v.booked_month AS voided_into, i.ledgered_at
FROM ingest_idempotency i
JOIN billing_voids v ON v.site_id = i.site_id AND v.event_id = i.event_id AND v.billed_month = i.billing_month
WHERE i.site_id = $1::uuid AND i.event_id = $2::text
ORDER BY i.usage_month DESC LIMIT 1

-- name: live_facts
-- The rows not voided billed in $3 whose occurred_at is in the bucket [$2, $2 + $4) (a minute, or
-- a quarter hour below the compaction watermark; one usage month: its partition, read through the
-- primary key's site_id prefix).
SELECT i.site_id, i.event_id, i.event_type, i.occurred_at, i.billing_month, i.quantity,
       i.properties::text AS properties, i.subject, NULL::date AS voided_into, i.ledgered_at
FROM ingest_idempotency i
WHERE i.site_id = $1::uuid AND i.usage_month = date_trunc('month', $2::timestamptz AT TIME ZONE 'UTC')::date
  AND i.occurred_at >= $2::timestamptz AND i.occurred_at < $2::timestamptz + $4::interval
  AND i.billing_month = $3::date
  AND NOT EXISTS (SELECT 1 FROM billing_voids v
                  WHERE v.site_id = i.site_id AND v.event_id = i.event_id AND v.billed_month = i.billing_month)

-- name: clear_order_stats
-- lo, hi and latest of the meters' buckets of one site, bucket [$3, $3 + $5) and billing month,
-- recomputed next.
UPDATE meter_buckets SET lo = NULL, hi = NULL, latest_value = NULL, latest_at = NULL, latest_event_id = NULL
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND bucket >= $3 AND bucket < $3 + $5::interval
  AND billing_month = $4

-- name: set_order_stats
UPDATE meter_buckets b SET lo = x.lo, hi = x.hi, latest_value = x.lv, latest_at = x.la, latest_event_id = x.le
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::numeric[], $6::numeric[],
            $7::timestamptz[], $8::text[]) AS x(m, sub, g, lo, hi, lv, la, le)
WHERE b.meter_id = x.m AND b.site_id = $9 AND b.bucket = $10 AND b.billing_month = $11
  AND b.subject = x.sub AND b.groups = x.g::jsonb

-- name: clear_uniques
DELETE FROM meter_unique_values
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND bucket >= $3 AND bucket < $3 + $5::interval
  AND billing_month = $4

-- name: drop_empty
-- A bucket whose rows and voids cancel out with no row left contributes nothing (aggregate.py
-- Bucket.contributes): it is not kept, so the answer has no window made of it alone.
DELETE FROM meter_buckets
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND bucket >= $3 AND bucket < $3 + $5::interval
  AND billing_month = ANY($4::date[]) AND n = 0 AND total = 0 AND lo IS NULL AND latest_at IS NULL
