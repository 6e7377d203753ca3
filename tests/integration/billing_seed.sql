-- Seeds of the billing export test (test_billing_export.py).

-- name: seed_rows
-- $4 ledger rows billed in month $3 for site $1, one a second from $2; the last tenth overlimit.
INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
    quantity, billing_class, path, received_at, kafka_partition, kafka_offset, properties)
SELECT $1, 'ev-' || lpad(g::text, 7, '0'), 'api_call', $2::timestamptz + g * interval '1 second',
       $3::date, $3::date, 1 + g % 7,
       CASE WHEN g > $4::int * 9 / 10 THEN 'overlimit' ELSE 'included' END, 'kafka',
       $2::timestamptz + g * interval '1 second' + interval '5 ms', g % 6, g,
       jsonb_build_object('n', g, 'path', '/api/items/' || g, 'agent', 'Mozilla/5.0 (X11; Linux) é',
                          'ratio', g / 7.0)
FROM generate_series(1, $4::int) AS g

-- name: seed_invoice
-- The invoice row those rows make (as the worker would have counted them).
INSERT INTO site_usage_monthly (site_id, month, events, quantity, overlimit_events, overlimit_quantity)
SELECT site_id, billing_month, count(*), sum(quantity), count(*) FILTER (WHERE billing_class = 'overlimit'),
       coalesce(sum(quantity) FILTER (WHERE billing_class = 'overlimit'), 0)
FROM ingest_idempotency WHERE site_id = $1 AND billing_month = $2 GROUP BY 1, 2
