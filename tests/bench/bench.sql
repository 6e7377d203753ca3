-- Queries of the benchmark harness (not of the product).

-- name: raw_ledger_insert
-- The baseline for the worker's write: ledger rows by unnest, ON CONFLICT DO NOTHING, and the
-- usage upsert of only the newly inserted rows, in one statement.
WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[], $5::timestamptz[],
                         $6::int[], $7::bigint[], $8::text[])
        AS b (site_id, event_id, occurred_at, quantity, received_at, kafka_partition, kafka_offset, properties)
), inserted AS (
    INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
                                    quantity, billing_class, path, received_at, kafka_partition, kafka_offset,
                                    properties)
    SELECT site_id, event_id, 'page_view', occurred_at,
           date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date,
           date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date,
           quantity, 'included', 'kafka', received_at, kafka_partition, kafka_offset, properties::jsonb
    FROM batch
    ON CONFLICT (site_id, event_id, usage_month) DO NOTHING
    RETURNING site_id, billing_month, quantity
)
INSERT INTO site_usage_monthly AS u (site_id, month, events, quantity)
SELECT site_id, billing_month, count(*), sum(quantity) FROM inserted GROUP BY site_id, billing_month
ON CONFLICT (site_id, month) DO UPDATE
SET events = u.events + excluded.events, quantity = u.quantity + excluded.quantity, updated_at = now()

-- name: usage_events
SELECT coalesce(sum(events), 0) FROM site_usage_monthly WHERE site_id = $1

-- name: ledger_count
SELECT count(*) FROM ingest_idempotency WHERE site_id = $1

-- name: outbox_count
SELECT count(*) FROM ingest_fallback_buffer WHERE site_id = $1

-- name: freshness_ms
-- Lag from the gateway's receive time to the commit that made the usage visible; ledgered_at is
-- now() of the worker's transaction, a few ms before its commit, so this slightly understates.
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) AS p99,
       max(lag_ms) AS max, count(*) AS n
FROM (SELECT extract(epoch FROM ledgered_at - received_at) * 1000 AS lag_ms
      FROM ingest_idempotency WHERE site_id = $1) AS lags

-- name: outbox_total
SELECT count(*) FROM ingest_fallback_buffer WHERE parked_at IS NULL

-- name: freshness_since
-- freshness_ms over the rows received from $2 on (a preloaded ledger's rows and the tail of an
-- earlier flood, still being ledgered when this run started, excluded).
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) AS p99,
       max(lag_ms) AS max, count(*) AS n
FROM (SELECT extract(epoch FROM ledgered_at - received_at) * 1000 AS lag_ms
      FROM ingest_idempotency WHERE site_id = $1 AND received_at >= $2) AS lags

-- name: partition_bytes
SELECT pg_total_relation_size(to_regclass($1))::bigint AS total

-- name: add_idle_sites
-- The tenants scenario (tests/bench/tenants.py): $2 sites with a hard cap and one event this month
-- ($3) and one the month before, each an invoice row with its ledger row behind it (reconcile finds
-- no drift, billing close states each site), none of which sends anything: their invoice rows were
-- last updated at the month's start (idle since).
WITH s AS (
    INSERT INTO sites (name, hard_cap) SELECT $1 || g, 1000000000 FROM generate_series(1, $2::int) g
    RETURNING site_id
), m AS (
    SELECT unnest(ARRAY[$3::date, ($3::date - interval '1 month')::date]) AS month
), u AS (
    INSERT INTO site_usage_monthly (site_id, month, events, quantity, updated_at)
    SELECT site_id, month, 1, 1, month + interval '1 hour' FROM s, m
    RETURNING 1
), l AS (
    INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
                                    quantity, billing_class, path, received_at)
    SELECT site_id, 'idle-' || to_char(month, 'YYYY-MM'), 'page_view', month + interval '1 hour', month,
           month, 1, 'included', 'kafka', month + interval '1 hour'
    FROM s, m
    RETURNING 1
)
SELECT (SELECT count(*) FROM u) AS usage_rows, (SELECT count(*) FROM l) AS ledger_rows

-- name: statements_of
SELECT count(*) FROM billing_statements WHERE month = $1::date

-- name: reopen_month
-- The tenants scenario closes last month at each level: its statements and its close undone.
WITH st AS (DELETE FROM billing_statements WHERE month = $1::date RETURNING 1),
     cm AS (DELETE FROM closed_months WHERE month = $1::date RETURNING 1)
SELECT (SELECT count(*) FROM st) AS statements, (SELECT count(*) FROM cm) AS closed

-- name: set_hard_cap
-- The tenants scenario's sender has a hard cap, so each of its requests checks the usage cache.
UPDATE sites SET hard_cap = $2 WHERE site_id = $1 RETURNING site_id

-- name: statements_loaded
SELECT 'pg_stat_statements' = ANY (regexp_split_to_array(current_setting('shared_preload_libraries'), '\s*,\s*'))

-- name: statements
-- The top statements by execution time since pg_stat_statements_reset() (the bench's stack loads it).
SELECT query, calls, rows, total_exec_time AS ms,
       total_exec_time / nullif(sum(total_exec_time) OVER (), 0) AS share
FROM pg_stat_statements
ORDER BY total_exec_time DESC
LIMIT $1
