-- Meter queries (services/opsmantik/meters/query.py). $2 NULL: every site (the operator).

-- name: extent
SELECT min(bucket) AS lo, max(bucket) AS hi FROM meter_buckets
WHERE meter_id = $1 AND ($2::uuid[] IS NULL OR site_id = ANY($2::uuid[]))

-- name: aggregate
-- One row per window and requested group. $3..$6 the pieces (rollup.py pieces): each window's
-- ordinal, tier (0: the minute/quarter buckets, 1: the minutes over every subject and group, 60:
-- hour rollups, 1440: day rollups) and range;
-- $7 the subjects (NULL: any), $8 the filterGroupBy object (groups @> it), $9 the billing month
-- (NULL: any), $10 group by site, $11 group by subject, $12 the meter's group names NOT grouped by
-- (removed from the groups object: what is left is the answer's groupBy), $13 group by billing
-- month.
-- The rows are read piece by piece (LATERAL; OFFSET 0 keeps it from being flattened into a join):
-- one index range per piece, the other tiers' branches cut by their one-time filter on w.width.
-- A bucket whose rows and voids cancel out with nothing left is no data (aggregate.py contributes);
-- a rollup row that sums to nothing is data iff one of its buckets is (EXISTS, only then read).
-- query.py derives the other aggregations' statement from this one: the same without LATEST's
-- ordered array_agg (`NULL::numeric AS latest`), since an ordered aggregate forbids a hash
-- aggregate: at 10M events a month, MINUTE windows over a day sorted 144k rows, spilling to disk.
SELECT w.ord, CASE WHEN $10::bool THEN b.site_id END AS site_id,
       CASE WHEN $11::bool THEN b.subject END AS subject, b.groups - $12::text[] AS groups,
       CASE WHEN $13::bool THEN b.billing_month END AS billing_month,
       sum(b.n) AS n, sum(b.total) AS total, min(b.lo) AS lo, max(b.hi) AS hi,
       (array_agg(b.latest_value ORDER BY b.latest_at DESC, b.latest_event_id COLLATE "C" DESC)
            FILTER (WHERE b.latest_at IS NOT NULL))[1] AS latest
FROM unnest($3::int[], $4::int[], $5::timestamptz[], $6::timestamptz[]) AS w(ord, width, ps, pe)
CROSS JOIN LATERAL (
    SELECT * FROM (
        SELECT x.site_id, x.subject, x.groups, x.billing_month, x.n, x.total, x.lo, x.hi,
               x.latest_value, x.latest_at, x.latest_event_id
        FROM meter_buckets x
        WHERE w.width = 0 AND x.meter_id = $1 AND ($2::uuid[] IS NULL OR x.site_id = ANY($2::uuid[]))
          AND x.bucket >= w.ps AND x.bucket < w.pe
          AND ($7::text[] IS NULL OR x.subject = ANY($7::text[]))
          AND x.groups @> $8::jsonb AND ($9::date IS NULL OR x.billing_month = $9::date)
          AND (x.n <> 0 OR x.total <> 0 OR x.lo IS NOT NULL OR x.latest_at IS NOT NULL)
        UNION ALL
        SELECT r.site_id, r.subject, r.groups, r.billing_month, r.n, r.total, r.lo, r.hi,
               r.latest_value, r.latest_at, r.latest_event_id
        FROM meter_rollups r
        WHERE w.width > 0 AND r.meter_id = $1 AND ($2::uuid[] IS NULL OR r.site_id = ANY($2::uuid[]))
          AND r.width = w.width AND r.bucket >= w.ps AND r.bucket < w.pe
          AND ($7::text[] IS NULL OR r.subject = ANY($7::text[]))
          AND r.groups @> $8::jsonb AND ($9::date IS NULL OR r.billing_month = $9::date)
          AND (r.n <> 0 OR r.total <> 0 OR r.lo IS NOT NULL OR r.latest_at IS NOT NULL
               OR EXISTS (SELECT 1 FROM meter_buckets x
                          WHERE x.meter_id = r.meter_id AND x.site_id = r.site_id
                            AND x.bucket >= r.bucket AND x.bucket < r.bucket + make_interval(mins => r.width)
                            AND x.billing_month = r.billing_month
                            AND (r.width = 1 OR (x.subject = r.subject AND x.groups = r.groups))
                            AND (x.n <> 0 OR x.total <> 0 OR x.lo IS NOT NULL OR x.latest_at IS NOT NULL)))
    ) u
    OFFSET 0) b
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, (b.groups - $12::text[])::text, 5  -- the groups as text (4::text would be the constant '4')
LIMIT $14  -- the answer cap + 1: an answer over the cap is refused without sending it all

-- name: unique_count
-- As aggregate, over the distinct values: meter_unique_values (tier 0) and meter_rollup_values.
SELECT w.ord, CASE WHEN $10::bool THEN b.site_id END AS site_id,
       CASE WHEN $11::bool THEN b.subject END AS subject, b.groups - $12::text[] AS groups,
       CASE WHEN $13::bool THEN b.billing_month END AS billing_month,
       count(DISTINCT b.value) AS n
FROM unnest($3::int[], $4::int[], $5::timestamptz[], $6::timestamptz[]) AS w(ord, width, ps, pe)
CROSS JOIN LATERAL (
    SELECT * FROM (
        SELECT x.site_id, x.subject, x.groups, x.billing_month, x.value
        FROM meter_unique_values x
        WHERE w.width = 0 AND x.meter_id = $1 AND ($2::uuid[] IS NULL OR x.site_id = ANY($2::uuid[]))
          AND x.bucket >= w.ps AND x.bucket < w.pe
          AND ($7::text[] IS NULL OR x.subject = ANY($7::text[]))
          AND x.groups @> $8::jsonb AND ($9::date IS NULL OR x.billing_month = $9::date)
        UNION ALL
        SELECT r.site_id, r.subject, r.groups, r.billing_month, r.value
        FROM meter_rollup_values r
        WHERE w.width > 0 AND r.meter_id = $1 AND ($2::uuid[] IS NULL OR r.site_id = ANY($2::uuid[]))
          AND r.width = w.width AND r.bucket >= w.ps AND r.bucket < w.pe
          AND ($7::text[] IS NULL OR r.subject = ANY($7::text[]))
          AND r.groups @> $8::jsonb AND ($9::date IS NULL OR r.billing_month = $9::date)
    ) u
    OFFSET 0) b
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, (b.groups - $12::text[])::text, 5  -- the groups as text (4::text would be the constant '4')
LIMIT $14  -- the answer cap + 1: an answer over the cap is refused without sending it all

-- name: rows_aggregate
-- The rows the aggregate query's index ranges hold (before its subject/group/month filters), up to
-- $7: counted first, so a query that would read more is refused (a 400) before it runs. The index
-- alone answers it (meter, site, [width,] bucket are the primary key's prefix).
SELECT count(*) FROM (
    SELECT 1
    FROM unnest($3::int[], $4::int[], $5::timestamptz[], $6::timestamptz[]) AS w(ord, width, ps, pe)
    CROSS JOIN LATERAL (
        SELECT * FROM (
            SELECT 1 FROM meter_buckets x
            WHERE w.width = 0 AND x.meter_id = $1 AND ($2::uuid[] IS NULL OR x.site_id = ANY($2::uuid[]))
              AND x.bucket >= w.ps AND x.bucket < w.pe
            UNION ALL
            SELECT 1 FROM meter_rollups r
            WHERE w.width > 0 AND r.meter_id = $1 AND ($2::uuid[] IS NULL OR r.site_id = ANY($2::uuid[]))
              AND r.width = w.width AND r.bucket >= w.ps AND r.bucket < w.pe
        ) u
        OFFSET 0) b
    LIMIT $7) c

-- name: rows_unique_count
SELECT count(*) FROM (
    SELECT 1
    FROM unnest($3::int[], $4::int[], $5::timestamptz[], $6::timestamptz[]) AS w(ord, width, ps, pe)
    CROSS JOIN LATERAL (
        SELECT * FROM (
            SELECT 1 FROM meter_unique_values x
            WHERE w.width = 0 AND x.meter_id = $1 AND ($2::uuid[] IS NULL OR x.site_id = ANY($2::uuid[]))
              AND x.bucket >= w.ps AND x.bucket < w.pe
            UNION ALL
            SELECT 1 FROM meter_rollup_values r
            WHERE w.width > 0 AND r.meter_id = $1 AND ($2::uuid[] IS NULL OR r.site_id = ANY($2::uuid[]))
              AND r.width = w.width AND r.bucket >= w.ps AND r.bucket < w.pe
        ) u
        OFFSET 0) b
    LIMIT $7) c

-- name: bound_aggregate
-- A cheap upper bound of rows_aggregate, read from the rollups only (at most $8 index entries of
-- each part): the rollup pieces' rows ($3..$5), plus, for the minute pieces, each hour's rollup
-- rows × the minutes of the pieces in that hour ($6, $7): a key has at most one bucket a minute, and
-- an hour rollup row iff it has one in the hour. When it is within the cap the exact count is not
-- needed (MINUTE windows over a day: 2,400 hour rows read instead of counting 144,000 buckets).
SELECT (SELECT count(*) FROM (
            SELECT 1
            FROM unnest($3::int[], $4::timestamptz[], $5::timestamptz[]) AS w(width, ps, pe)
            CROSS JOIN LATERAL (
                SELECT 1 FROM meter_rollups r
                WHERE r.meter_id = $1 AND ($2::uuid[] IS NULL OR r.site_id = ANY($2::uuid[]))
                  AND r.width = w.width AND r.bucket >= w.ps AND r.bucket < w.pe
                OFFSET 0) x
            LIMIT $8) c)
     + (SELECT coalesce(sum(mins), 0) FROM (
            SELECT h.mins
            FROM unnest($6::timestamptz[], $7::int[]) AS h(hr, mins)
            CROSS JOIN LATERAL (
                SELECT 1 FROM meter_rollups r
                WHERE r.meter_id = $1 AND ($2::uuid[] IS NULL OR r.site_id = ANY($2::uuid[]))
                  AND r.width = 60 AND r.bucket = h.hr
                OFFSET 0) y
            LIMIT $8) z)

-- name: bound_unique_count
-- As bound_aggregate over the distinct values: a key's values in a minute are at most its hour's.
SELECT (SELECT count(*) FROM (
            SELECT 1
            FROM unnest($3::int[], $4::timestamptz[], $5::timestamptz[]) AS w(width, ps, pe)
            CROSS JOIN LATERAL (
                SELECT 1 FROM meter_rollup_values r
                WHERE r.meter_id = $1 AND ($2::uuid[] IS NULL OR r.site_id = ANY($2::uuid[]))
                  AND r.width = w.width AND r.bucket >= w.ps AND r.bucket < w.pe
                OFFSET 0) x
            LIMIT $8) c)
     + (SELECT coalesce(sum(mins), 0) FROM (
            SELECT h.mins
            FROM unnest($6::timestamptz[], $7::int[]) AS h(hr, mins)
            CROSS JOIN LATERAL (
                SELECT 1 FROM meter_rollup_values r
                WHERE r.meter_id = $1 AND ($2::uuid[] IS NULL OR r.site_id = ANY($2::uuid[]))
                  AND r.width = 60 AND r.bucket = h.hr
                OFFSET 0) y
            LIMIT $8) z)
