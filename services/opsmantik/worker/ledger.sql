-- The worker's batch transaction, step by step (services/opsmantik/worker/ledger.py).

-- name: close_lock_shared
-- First statement of every batch: the close lock, shared (services/opsmantik/billing/billing.sql takes it
-- exclusive), so `opsmantik billing close` waits for this batch and none books into a closing month.
SELECT pg_advisory_xact_lock_shared(5124400005)

-- name: batch_table
-- The batch's events (ledger.py lock_sites_and_find_ledgered: binary COPY, the fields of
-- message.IngestEvent in its order, no per-element array encoding in the worker), one temporary
-- table per connection, emptied at every COMMIT. ledgered_copies and insert_ledger read it;
-- (kafka_partition, kafka_offset) is unique in a batch and orders it as ledger.dedupe_in_order
-- does (ledger order). occurred_us, received_us: the times in microseconds since 1970-01-01 UTC
-- (an int8 costs the worker far less to encode than a timestamptz); insert_ledger makes them
-- timestamptz again, exactly (integer seconds times 1 s, then the microseconds: float8-exact for
-- any year 1-9999).
CREATE TEMP TABLE IF NOT EXISTS worker_batch (
    site_id uuid, event_id text, event_type text, occurred_us bigint, usage_month date,
    quantity bigint, properties text, received_us bigint, path text, kafka_partition int,
    kafka_offset bigint, subject text
) ON COMMIT DELETE ROWS

-- name: ledgered_copies
-- The events of the batch (worker_batch) already in the ledger in any month of their dedupe scope
-- [lo, hi] (their own month included): a replay, a re-send, or a copy sent again with a time in
-- another month. The scope is one per (usage month, received_at), which a request's events share:
-- $1-$4 hold the batch's distinct pairs and their [lo, hi]. Each copy: the event's
-- (kafka_partition, kafka_offset), then its billable message as insert_ledger returns one (the
-- batch publishes the canonical rows of its duplicates too). The lateral subquery (OFFSET 0: not
-- flattened into a join the planner may turn into a scan) probes the primary key once per event,
-- and run-time partition pruning probes only the scope's partitions (at most three when the
-- worker is current).
SELECT k.kafka_partition, k.kafka_offset, c.*
FROM worker_batch k
JOIN unnest($1::date[], $2::bigint[], $3::date[], $4::date[]) AS s(um, r, lo, hi)
  ON s.um = k.usage_month AND s.r = k.received_us
CROSS JOIN LATERAL (
    SELECT i.site_id::text AS key,
           billable_value(i) AS value,
           i.event_id,
           'urn:opsmantik:site:' || i.site_id::text AS source,
           billable_time(i.occurred_at) AS occurred,
           CASE WHEN starts_with(i.event_id, 'ce~') AND jsonb_typeof(i.properties -> 'ce' -> 'subject') = 'string'
                THEN i.properties -> 'ce' ->> 'subject' END AS subject
    FROM ingest_idempotency i
    WHERE i.site_id = k.site_id AND i.event_id = k.event_id AND i.usage_month >= s.lo AND i.usage_month <= s.hi
    OFFSET 0
) c

-- name: drop_ledgered
-- The events ledgered_copies found leave worker_batch: what is left is the new rows.
DELETE FROM worker_batch k
USING unnest($1::int[], $2::bigint[]) AS d(p, o)
WHERE k.kafka_partition = d.p AND k.kafka_offset = d.o

-- name: closed_months_from
SELECT month FROM closed_months WHERE month >= $1::date ORDER BY month

-- name: site_quotas
SELECT site_id, monthly_quota FROM sites WHERE site_id = ANY($1::uuid[])

-- name: lock_invoice_rows
-- Create-or-lock the batch's invoice rows in one fixed order (site_id, month), so two
-- workers touching the same rows queue up instead of deadlocking. DO UPDATE (a no-op
-- write) takes the row lock and returns the running count the classes are decided from.
INSERT INTO site_usage_monthly AS u (site_id, month)
SELECT s, m FROM unnest($1::uuid[], $2::date[]) AS t(s, m) ORDER BY s, m
ON CONFLICT (site_id, month) DO UPDATE SET events = u.events
RETURNING site_id, month, events

-- name: insert_ledger
-- The batch's new rows (worker_batch after drop_ledgered: ledgered_copies found none of them in
-- their scope, under the site locks), in ledger order, each with its billing month ($2, $3: the
-- batch's usage months and theirs) and its class ($1: one byte per new row in ledger order, 1:
-- overlimit). RETURNING: each row's billable message (schemas/billable.v1.json),
-- formatted here instead of per row in the worker's Python (issue 28): the Kafka key, the value
-- (billable_value, migration 0018: byte for byte what billable.to_billable makes of the row), and
-- the CloudEvents header values ce_id, ce_source, ce_time (the value's occurred_at) and
-- ce_subject (billable.ce_headers' rule: properties.ce.subject when a string, for the event_ids
-- POST /api/v1/events derives). tests/integration/test_worker_billable_sql.py holds this and
-- ledgered_copies to the Python reference's bytes.
INSERT INTO ingest_idempotency AS i (site_id, event_id, event_type, occurred_at, usage_month,
    billing_month, quantity, billing_class, path, received_at, kafka_partition, kafka_offset,
    properties, subject)
SELECT k.site_id, k.event_id, k.event_type,
       'epoch'::timestamptz + (k.occurred_us / 1000000) * interval '1 second'
                            + (k.occurred_us % 1000000) * interval '1 microsecond',
       k.usage_month, b.bm, k.quantity,
       CASE WHEN get_byte($1::bytea, (row_number() OVER (ORDER BY k.kafka_partition, k.kafka_offset))::int - 1) = 1
            THEN 'overlimit' ELSE 'included' END,
       k.path,
       'epoch'::timestamptz + (k.received_us / 1000000) * interval '1 second'
                            + (k.received_us % 1000000) * interval '1 microsecond',
       k.kafka_partition, k.kafka_offset, k.properties::jsonb, k.subject
FROM worker_batch k
JOIN unnest($2::date[], $3::date[]) AS b(um, bm) ON b.um = k.usage_month
ORDER BY k.kafka_partition, k.kafka_offset
ON CONFLICT (site_id, event_id, usage_month) DO NOTHING
RETURNING i.site_id::text AS key,
       billable_value(i) AS value,
       i.event_id,
       'urn:opsmantik:site:' || i.site_id::text AS source,
       billable_time(i.occurred_at) AS occurred,
       CASE WHEN starts_with(i.event_id, 'ce~') AND jsonb_typeof(i.properties -> 'ce' -> 'subject') = 'string'
            THEN i.properties -> 'ce' ->> 'subject' END AS subject

-- name: add_usage
UPDATE site_usage_monthly u
SET events = u.events + d.ev, quantity = u.quantity + d.q,
    overlimit_events = u.overlimit_events + d.oe, overlimit_quantity = u.overlimit_quantity + d.oq,
    updated_at = now()
FROM unnest($1::uuid[], $2::date[], $3::bigint[], $4::numeric[], $5::bigint[], $6::numeric[])
     AS d(s, m, ev, q, oe, oq)
WHERE u.site_id = d.s AND u.month = d.m

-- name: ledger_rows
-- The canonical ledger rows of every event of the batch, new or already there: the
-- billable stream republishes both (a replay after a crash must still publish). One row per event:
-- within its dedupe scope [lo, hi] an event_id is ledgered at most once.
SELECT i.site_id, i.event_id, i.event_type, i.occurred_at, i.usage_month, i.billing_month,
       i.quantity, i.billing_class, i.path, i.received_at, i.ledgered_at, i.kafka_partition,
       i.kafka_offset, i.properties::text AS properties
FROM ingest_idempotency i
JOIN unnest($1::uuid[], $2::text[], $3::date[], $4::date[]) AS k(s, e, lo, hi)
  ON i.site_id = k.s AND i.event_id = k.e AND i.usage_month >= k.lo AND i.usage_month <= k.hi

-- name: insert_dead_letters
INSERT INTO ingest_dead_letter (topic, kafka_partition, kafka_offset, site_id, event_id, reason, payload)
SELECT $1::text, p, o, s, e, r, b
FROM unnest($2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bytea[]) AS t(p, o, s, e, r, b)
ON CONFLICT DO NOTHING

-- name: add_freshness
INSERT INTO slo_freshness AS f (minute, instance, events, within_1s, within_5s, lag_max_ms, lag_sum_ms)
VALUES (date_trunc('minute', $1::timestamptz), $2, $3, $4, $5, $6, $7)
ON CONFLICT (minute, instance) DO UPDATE
SET events = f.events + EXCLUDED.events, within_1s = f.within_1s + EXCLUDED.within_1s,
    within_5s = f.within_5s + EXCLUDED.within_5s,
    lag_max_ms = greatest(f.lag_max_ms, EXCLUDED.lag_max_ms), lag_sum_ms = f.lag_sum_ms + EXCLUDED.lag_sum_ms
