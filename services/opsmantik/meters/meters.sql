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

-- name: meter_by_slug
SELECT meter_id, slug, event_type, aggregation, value_property, group_by::text AS group_by, builtin,
       created_at, backfilled_at
FROM meters WHERE slug = $1 OR meter_id::text = $1

-- name: insert_meter
INSERT INTO meters (slug, event_type, aggregation, value_property, group_by)
VALUES ($1, $2, $3, $4, $5::jsonb)
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
SELECT site_id, event_id, event_type, occurred_at, billing_month, quantity,
       properties::text AS properties, subject
FROM ingest_idempotency
WHERE (site_id, event_id) > ($1::uuid, $2::text)
ORDER BY site_id, event_id
LIMIT $3

-- name: mark_backfilled
UPDATE meters SET backfilled_at = now() WHERE meter_id = $1 RETURNING backfilled_at
