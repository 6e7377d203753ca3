-- GET /api/v1/events/{event_id} and GET /api/v1/events?status=dead_lettered
-- (services/opsmantik/gateway/routes_events.py). Every query is scoped by the caller's site_id.

-- name: locate
-- Where the event is, in one statement: one snapshot (an event moving from the outbox to the
-- ledger meanwhile is seen in one place, never in neither) and one round trip. Each later place
-- is read only when no earlier one has the event (the NOT EXISTS are one-time filters).
-- The ledger: an event_id is unique within its dedupe scope (migration 0009); should it have
-- been reused months apart, the newest event is the one named (as `events void` does); one index
-- probe per month partition, newest first. `subject` comes from to_jsonb so the query runs before
-- and after the column (migration 0011) exists.
-- The archived months: those (`opsmantik archive`) whose manifest's totals name the site (as
-- billing.sql's site_archived_months, which `events void` uses).
-- ingest_dead_letter.site_id is the message's text as the worker read it: the gateway writes the
-- canonical (lower-case) uuid text, which is what $1::uuid::text gives.
WITH ledger AS (
    SELECT i.event_type, i.quantity, i.occurred_at, i.received_at, i.ledgered_at, i.usage_month,
           i.billing_month, i.billing_class, i.path, to_jsonb(i) ->> 'subject' AS subject,
           v.voided_at, v.booked_month AS void_booked_month
    FROM ingest_idempotency i
    LEFT JOIN billing_voids v ON v.site_id = i.site_id AND v.event_id = i.event_id
    WHERE i.site_id = $1::uuid AND i.event_id = $2::text
    ORDER BY i.usage_month DESC LIMIT 1
), outbox AS (
    SELECT id AS outbox_id, received_at AS outbox_received_at, created_at AS queued_at, attempts,
           parked_at
    FROM ingest_fallback_buffer
    WHERE site_id = $1::uuid AND event_id = $2::text AND NOT EXISTS (SELECT 1 FROM ledger)
    ORDER BY id LIMIT 1
), dead AS (
    SELECT reason, created_at AS dead_lettered_at, kafka_partition, kafka_offset
    FROM ingest_dead_letter
    WHERE site_id = $1::uuid::text AND event_id = $2::text
      AND NOT EXISTS (SELECT 1 FROM ledger) AND NOT EXISTS (SELECT 1 FROM outbox)
    ORDER BY created_at DESC, kafka_partition, kafka_offset LIMIT 1
), archived AS (
    SELECT array_agg(a.month ORDER BY a.month) AS archived_months FROM ledger_archives a
    WHERE NOT EXISTS (SELECT 1 FROM ledger) AND NOT EXISTS (SELECT 1 FROM outbox)
      AND NOT EXISTS (SELECT 1 FROM dead)
      AND EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(a.manifest -> 'totals', '[]'::jsonb)) AS t
                  WHERE t ->> 'site_id' = $1::uuid::text)
)
SELECT * FROM (SELECT 1 AS one) one
LEFT JOIN ledger ON true LEFT JOIN outbox ON true LEFT JOIN dead ON true LEFT JOIN archived ON true

-- name: has_meters
-- The meters table comes from migration 0011; before it, a lookup names no meters.
SELECT to_regclass('meters') IS NOT NULL

-- name: meters_of_type
-- The meters defined over the event's type (or every type, '*'), the built-in ones included.
SELECT slug FROM meters WHERE event_type = $1::text OR event_type = '*' ORDER BY slug

-- name: recent_dead_letters
SELECT event_id, reason, created_at AS dead_lettered_at, kafka_partition, kafka_offset FROM ingest_dead_letter
WHERE site_id = $1::uuid::text
ORDER BY created_at DESC, kafka_partition DESC, kafka_offset DESC LIMIT $2::int
