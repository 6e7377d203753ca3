-- Meter queries (services/opsmantik/meters/query.py). $2 NULL: every site (the operator).

-- name: extent
SELECT min(bucket) AS lo, max(bucket) AS hi FROM meter_buckets
WHERE meter_id = $1 AND ($2::uuid[] IS NULL OR site_id = ANY($2::uuid[]))

-- name: aggregate
-- One row per window and requested group: $4/$5 the windows' starts and ends, $6 the subjects
-- (NULL: any), $7 the filterGroupBy object (groups @> it), $8 the billing month (NULL: any),
-- $9 group by site, $10 group by subject, $11 the meter's group names to group by.
-- The buckets are read window by window (LATERAL; OFFSET 0 keeps it from being flattened into a
-- join): one index range per window. As a plain join, at 10M events a month the planner put the
-- buckets outside and the windows inside, every bucket of the range compared with every window:
-- DAY windows over the month took 15 s, MINUTE windows over a day passed the 30 s timeout (503).
SELECT w.ord, CASE WHEN $9::bool THEN b.site_id END AS site_id,
       CASE WHEN $10::bool THEN b.subject END AS subject, p.g AS groups,
       CASE WHEN $12::bool THEN b.billing_month END AS billing_month,
       sum(b.n) AS n, sum(b.total) AS total, min(b.lo) AS lo, max(b.hi) AS hi,
       (array_agg(b.latest_value ORDER BY b.latest_at DESC, b.latest_event_id COLLATE "C" DESC)
            FILTER (WHERE b.latest_at IS NOT NULL))[1] AS latest
FROM unnest($4::timestamptz[], $5::timestamptz[]) WITH ORDINALITY AS w(ws, we, ord)
CROSS JOIN LATERAL (
    SELECT * FROM meter_buckets x
    WHERE x.meter_id = $1 AND ($2::uuid[] IS NULL OR x.site_id = ANY($2::uuid[]))
      AND x.bucket >= w.ws AND x.bucket < w.we AND x.bucket >= $3
      AND ($6::text[] IS NULL OR x.subject = ANY($6::text[]))
      AND x.groups @> $7::jsonb AND ($8::date IS NULL OR x.billing_month = $8::date)
      -- a bucket whose rows and voids cancel out with nothing left is no data (aggregate.py contributes)
      AND (x.n <> 0 OR x.total <> 0 OR x.lo IS NOT NULL OR x.latest_at IS NOT NULL)
    OFFSET 0) b
CROSS JOIN LATERAL (SELECT coalesce(jsonb_object_agg(k, b.groups -> k), '{}'::jsonb) AS g
                    FROM unnest($11::text[]) AS k) p
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4::text, 5

-- name: unique_count
SELECT w.ord, CASE WHEN $9::bool THEN b.site_id END AS site_id,
       CASE WHEN $10::bool THEN b.subject END AS subject, p.g AS groups,
       CASE WHEN $12::bool THEN b.billing_month END AS billing_month,
       count(DISTINCT b.value) AS n
FROM unnest($4::timestamptz[], $5::timestamptz[]) WITH ORDINALITY AS w(ws, we, ord)
CROSS JOIN LATERAL (
    SELECT * FROM meter_unique_values x
    WHERE x.meter_id = $1 AND ($2::uuid[] IS NULL OR x.site_id = ANY($2::uuid[]))
      AND x.bucket >= w.ws AND x.bucket < w.we AND x.bucket >= $3
      AND ($6::text[] IS NULL OR x.subject = ANY($6::text[]))
      AND x.groups @> $7::jsonb AND ($8::date IS NULL OR x.billing_month = $8::date)
    OFFSET 0) b
CROSS JOIN LATERAL (SELECT coalesce(jsonb_object_agg(k, b.groups -> k), '{}'::jsonb) AS g
                    FROM unnest($11::text[]) AS k) p
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4::text, 5
