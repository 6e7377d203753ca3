-- Meter definitions (services/opsmantik/meters/definitions.py).

-- name: definitions_lock
-- Creating, deleting or backfilling a meter takes the close lock exclusively: every worker batch
-- holds it shared (worker/ledger.sql close_lock_shared), so a batch counts an event into exactly the
-- meters that existed when it started, and a backfill sees no batch in flight.
SELECT pg_advisory_xact_lock(5124400005)

-- name: all_meters
SELECT meter_id, slug, event_type, aggregation, value_property, group_by::text AS group_by, builtin,
       created_at, backfilled_at
FROM meters ORDER BY slug

-- name: batch_meters
-- The meters a worker batch counts into: a meter counts the rows of every batch whose transaction
-- started (now(), the rows' ledgered_at) at or after its creation, or every row once backfilled.
-- created_at is taken after the close lock (insert_meter), so a batch that started later waited
-- for the creation and sees the meter: "counted" is exactly `backfilled_at IS NOT NULL OR
-- ledgered_at >= created_at`, the rule a void (meters/voids.py) applies.
SELECT meter_id, slug, event_type, aggregation, value_property, group_by::text AS group_by, builtin,
       created_at, backfilled_at
FROM meters WHERE backfilled_at IS NOT NULL OR created_at <= now() ORDER BY slug

-- name: meter_by_slug
SELECT meter_id, slug, event_type, aggregation, value_property, group_by::text AS group_by, builtin,
       created_at, backfilled_at
FROM meters WHERE slug = $1 OR meter_id::text = $1

-- name: insert_meter
-- created_at: the clock after definitions_lock, not the transaction's start (see batch_meters).
INSERT INTO meters (slug, event_type, aggregation, value_property, group_by, created_at)
VALUES ($1, $2, $3, $4, $5::jsonb, clock_timestamp())
ON CONFLICT (slug) DO NOTHING
RETURNING meter_id, slug, event_type, aggregation, value_property, group_by::text AS group_by, builtin,
          created_at, backfilled_at

-- name: delete_meter
DELETE FROM meters WHERE slug = $1 AND NOT builtin RETURNING meter_id

-- name: clear_meter
DELETE FROM meter_buckets WHERE meter_id = $1

-- name: clear_meter_uniques
DELETE FROM meter_unique_values WHERE meter_id = $1

-- name: ledger_facts
-- The ledger in Postgres (archived months are not in it), in chunks by key.
-- voided_into: the booked month of the row's void, if voided (docs/meters.md "Voids").
SELECT i.site_id, i.event_id, i.event_type, i.occurred_at, i.billing_month, i.quantity,
       i.properties::text AS properties, i.subject, v.booked_month AS voided_into
FROM ingest_idempotency i
LEFT JOIN billing_voids v
       ON v.site_id = i.site_id AND v.event_id = i.event_id AND v.billed_month = i.billing_month
WHERE (i.site_id, i.event_id) > ($1::uuid, $2::text)
ORDER BY i.site_id, i.event_id
LIMIT $3

-- name: mark_backfilled
UPDATE meters SET backfilled_at = now() WHERE meter_id = $1 RETURNING backfilled_at
