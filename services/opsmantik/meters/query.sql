-- Meter queries (services/opsmantik/meters/query.py). $2 NULL: every site (the operator).

-- name: extent
SELECT min(bucket) AS lo, max(bucket) AS hi FROM meter_buckets
WHERE meter_id = $1 AND ($2::uuid[] IS NULL OR site_id = ANY($2::uuid[]))

-- name: aggregate
-- One row per window and requested group: $4/$5 the windows' starts and ends, $6 the subjects
-- (NULL: any), $7 the filterGroupBy object (groups @> it), $8 the billing month (NULL: any),
-- $9 group by site, $10 group by subject, $11 the meter's group names to group by.
-- The windows are contiguous (meters/windows.py: each ends where the next starts), so a bucket's
-- window is width_bucket over their starts and the rows are one index range [first start, last
-- end). (A join of the windows' unnest with the buckets let the planner loop over every bucket of
-- the range once per window: 15 s for DAY windows over a 10M-event month, docs/benchmarks.md.)
SELECT width_bucket(b.bucket, $4::timestamptz[]) AS ord, CASE WHEN $9::bool THEN b.site_id END AS site_id,
       CASE WHEN $10::bool THEN b.subject END AS subject, p.g AS groups,
       CASE WHEN $12::bool THEN b.billing_month END AS billing_month,
       sum(b.n) AS n, sum(b.total) AS total, min(b.lo) AS lo, max(b.hi) AS hi,
       (array_agg(b.latest_value ORDER BY b.latest_at DESC, b.latest_event_id COLLATE "C" DESC)
            FILTER (WHERE b.latest_at IS NOT NULL))[1] AS latest
FROM meter_buckets b
CROSS JOIN LATERAL (SELECT coalesce(jsonb_object_agg(k, b.groups -> k), '{}'::jsonb) AS g
                    FROM unnest($11::text[]) AS k) p
WHERE b.meter_id = $1 AND ($2::uuid[] IS NULL OR b.site_id = ANY($2::uuid[]))
  AND b.bucket >= $3 AND b.bucket >= ($4::timestamptz[])[1]
  AND b.bucket < ($5::timestamptz[])[cardinality($5::timestamptz[])]
  AND ($6::text[] IS NULL OR b.subject = ANY($6::text[]))
  AND b.groups @> $7::jsonb AND ($8::date IS NULL OR b.billing_month = $8::date)
  -- a bucket whose rows and voids cancel out with nothing left is no data (aggregate.py contributes)
  AND (b.n <> 0 OR b.total <> 0 OR b.lo IS NOT NULL OR b.latest_at IS NOT NULL)
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4::text, 5

-- name: unique_count
SELECT width_bucket(b.bucket, $4::timestamptz[]) AS ord, CASE WHEN $9::bool THEN b.site_id END AS site_id,
       CASE WHEN $10::bool THEN b.subject END AS subject, p.g AS groups,
       CASE WHEN $12::bool THEN b.billing_month END AS billing_month,
       count(DISTINCT b.value) AS n
FROM meter_unique_values b
CROSS JOIN LATERAL (SELECT coalesce(jsonb_object_agg(k, b.groups -> k), '{}'::jsonb) AS g
                    FROM unnest($11::text[]) AS k) p
WHERE b.meter_id = $1 AND ($2::uuid[] IS NULL OR b.site_id = ANY($2::uuid[]))
  AND b.bucket >= $3 AND b.bucket >= ($4::timestamptz[])[1]
  AND b.bucket < ($5::timestamptz[])[cardinality($5::timestamptz[])]
  AND ($6::text[] IS NULL OR b.subject = ANY($6::text[]))
  AND b.groups @> $7::jsonb AND ($8::date IS NULL OR b.billing_month = $8::date)
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4::text, 5
