-- The meters' aggregates (services/opsmantik/meters/aggregate.py), in the ledger's transaction.

-- name: add_buckets
-- lo/hi: least/greatest ignore NULL; latest: the later (occurred_at, event_id), event_ids compared
-- bytewise (COLLATE "C") as Python compares them.
INSERT INTO meter_buckets AS b (meter_id, site_id, bucket, billing_month, subject, groups, n, total,
                                lo, hi, latest_value, latest_at, latest_event_id)
SELECT m, s, t, bm, sub, g::jsonb, n, tot, lo, hi, lv, la, le
FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::date[], $5::text[], $6::text[],
            $7::bigint[], $8::numeric[], $9::numeric[], $10::numeric[], $11::numeric[],
            $12::timestamptz[], $13::text[])
     WITH ORDINALITY AS x(m, s, t, bm, sub, g, n, tot, lo, hi, lv, la, le, ord)
ORDER BY ord
ON CONFLICT (meter_id, site_id, bucket, billing_month, subject, groups) DO UPDATE
SET n = b.n + EXCLUDED.n,
    total = b.total + EXCLUDED.total,
    lo = least(b.lo, EXCLUDED.lo),
    hi = greatest(b.hi, EXCLUDED.hi),
    latest_value = CASE WHEN b.latest_at IS NULL
                          OR (EXCLUDED.latest_at, EXCLUDED.latest_event_id COLLATE "C")
                             > (b.latest_at, b.latest_event_id COLLATE "C")
                        THEN EXCLUDED.latest_value ELSE b.latest_value END,
    latest_event_id = CASE WHEN b.latest_at IS NULL
                          OR (EXCLUDED.latest_at, EXCLUDED.latest_event_id COLLATE "C")
                             > (b.latest_at, b.latest_event_id COLLATE "C")
                        THEN EXCLUDED.latest_event_id ELSE b.latest_event_id END,
    latest_at = CASE WHEN b.latest_at IS NULL
                          OR (EXCLUDED.latest_at, EXCLUDED.latest_event_id COLLATE "C")
                             > (b.latest_at, b.latest_event_id COLLATE "C")
                        THEN EXCLUDED.latest_at ELSE b.latest_at END

-- name: add_unique_values
INSERT INTO meter_unique_values (meter_id, site_id, bucket, billing_month, subject, groups, value)
SELECT m, s, t, bm, sub, g::jsonb, v
FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::date[], $5::text[], $6::text[], $7::text[])
     AS x(m, s, t, bm, sub, g, v)
ON CONFLICT DO NOTHING
