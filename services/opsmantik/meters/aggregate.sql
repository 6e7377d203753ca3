-- The meters' aggregates (services/opsmantik/meters/aggregate.py), in the ledger's transaction.
-- Each statement writes the minute buckets and, from the same input rows, their hour and day
-- rollups and the minute's rollup over every subject and group (meter_rollups,
-- meter_rollup_values: migration 0017, docs/meters.md "Tiers"): the tiers
-- are exact by construction (the same merge, the same transaction, the same statement), and the
-- worker's Python does no per-event work for them.

-- name: add_buckets
-- lo/hi: least/greatest ignore NULL; latest: the later (occurred_at, event_id), event_ids compared
-- bytewise (COLLATE "C") as Python compares them. The rollups: the input rows grouped by their
-- UTC hour and UTC day (date_bin from a UTC midnight), merged the same way.
WITH x AS MATERIALIZED (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::date[], $5::text[], $6::text[],
                         $7::bigint[], $8::numeric[], $9::numeric[], $10::numeric[], $11::numeric[],
                         $12::timestamptz[], $13::text[])
         WITH ORDINALITY AS x(m, s, t, bm, sub, g, n, tot, lo, hi, lv, la, le, ord)
), minutes AS (
    INSERT INTO meter_buckets AS b (meter_id, site_id, bucket, billing_month, subject, groups, n, total,
                                    lo, hi, latest_value, latest_at, latest_event_id)
    SELECT m, s, t, bm, sub, g::jsonb, n, tot, lo, hi, lv, la, le
    FROM x
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
)
INSERT INTO meter_rollups AS b (meter_id, site_id, width, bucket, billing_month, subject, groups, n, total,
                                lo, hi, latest_value, latest_at, latest_event_id)
SELECT * FROM (
    SELECT m, s, w.width, date_bin(w.stride, t, '2000-01-01 00:00:00+00') AS t, bm, sub, g::jsonb AS g,
           sum(n) AS n, sum(tot) AS tot, min(lo) AS lo, max(hi) AS hi,
           (array_agg(lv ORDER BY la DESC, le COLLATE "C" DESC) FILTER (WHERE la IS NOT NULL))[1] AS lv,
           max(la) AS la,
           (array_agg(le ORDER BY la DESC, le COLLATE "C" DESC) FILTER (WHERE la IS NOT NULL))[1] AS le
    FROM x CROSS JOIN (VALUES (60::smallint, interval '1 hour'), (1440::smallint, interval '1 day'))
         AS w(width, stride)
    GROUP BY m, s, w.width, 4, bm, sub, g::jsonb
    UNION ALL  -- width 1: the minute over every subject and group (MINUTE windows without them)
    SELECT m, s, 1::smallint, t, bm, '', '{}'::jsonb, sum(n), sum(tot), min(lo), max(hi),
           (array_agg(lv ORDER BY la DESC, le COLLATE "C" DESC) FILTER (WHERE la IS NOT NULL))[1],
           max(la),
           (array_agg(le ORDER BY la DESC, le COLLATE "C" DESC) FILTER (WHERE la IS NOT NULL))[1]
    FROM x
    GROUP BY m, s, t, bm
) r
ORDER BY m, s, width, t, bm, sub, g
ON CONFLICT (meter_id, site_id, width, bucket, billing_month, subject, groups) DO UPDATE
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
-- The distinct values per minute bucket, and per hour and day rollup (the union of the minutes').
WITH x AS MATERIALIZED (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::date[], $5::text[], $6::text[],
                         $7::text[]) AS x(m, s, t, bm, sub, g, v)
), minutes AS (
    INSERT INTO meter_unique_values (meter_id, site_id, bucket, billing_month, subject, groups, value)
    SELECT m, s, t, bm, sub, g::jsonb, v FROM x
    ON CONFLICT DO NOTHING
)
INSERT INTO meter_rollup_values (meter_id, site_id, width, bucket, billing_month, subject, groups, value)
SELECT DISTINCT m, s, w.width, date_bin(w.stride, t, '2000-01-01 00:00:00+00'), bm, sub, g::jsonb, v
FROM x CROSS JOIN (VALUES (60::smallint, interval '1 hour'), (1440::smallint, interval '1 day')) AS w(width, stride)
ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
ON CONFLICT DO NOTHING
