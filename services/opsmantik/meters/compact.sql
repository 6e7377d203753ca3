-- Meter compaction (services/opsmantik/meters/compact.py, docs/meters.md "Storage bound").
-- A bucket's quarter: date_bin with a UTC origin (an absolute 15 minutes, independent of the
-- session's time zone).

-- name: watermark
SELECT compacted_before FROM meter_compaction

-- name: raise_watermark
-- Raised before any bucket is merged: from then on MINUTE windows there are refused, so no query
-- ever reads a 15-minute bucket as a minute.
INSERT INTO meter_compaction (compacted_before) VALUES ($1)
ON CONFLICT (one) DO UPDATE SET compacted_before = greatest(meter_compaction.compacted_before, EXCLUDED.compacted_before)
RETURNING compacted_before

-- name: pairs
-- Every (meter, site) with a bucket before $1 that is not on a quarter hour: what is left to merge.
SELECT DISTINCT meter_id, site_id FROM meter_buckets
WHERE bucket < $1 AND date_bin('15 minutes', bucket, '2000-01-01 00:00:00+00') <> bucket
UNION
SELECT DISTINCT meter_id, site_id FROM meter_unique_values
WHERE bucket < $1 AND date_bin('15 minutes', bucket, '2000-01-01 00:00:00+00') <> bucket

-- name: first_bucket
-- The pair's first bucket at or after $3: the merge goes from one day with buckets to the next,
-- never through the empty days between (a bucket in year 1 would be 737,000 of them).
SELECT least((SELECT min(bucket) FROM meter_buckets WHERE meter_id = $1 AND site_id = $2 AND bucket >= $3),
             (SELECT min(bucket) FROM meter_unique_values WHERE meter_id = $1 AND site_id = $2 AND bucket >= $3))

-- name: close_lock_shared
-- The close lock, shared, as every worker batch and void takes it (worker/ledger.sql): a backfill
-- or a meter's creation (exclusive) excludes a merge.
SELECT pg_advisory_xact_lock_shared(5124400005)

-- name: merge_buckets
-- The minute buckets of one meter and site in [$3, $4) that are not on a quarter hour, moved into
-- their quarter's bucket with the worker's merge (aggregate.sql add_buckets): n and total add,
-- lo/hi combine, latest keeps the later (occurred_at, event_id bytewise). A quarter whose merged
-- row would hold nothing (n = 0, total = 0, no lo, no latest: rows and voids of other minutes
-- cancelling out) is left as minutes: merged it would be no data (query.sql), and its window
-- would lose a row whose value is 0.
WITH cancelled AS MATERIALIZED (  -- usually empty; materialized: computed once, not per row
    SELECT date_bin('15 minutes', bucket, '2000-01-01 00:00:00+00') AS quarter, billing_month, subject, groups
    FROM meter_buckets
    WHERE meter_id = $1 AND site_id = $2 AND bucket >= $3 AND bucket < $4
    GROUP BY 1, 2, 3, 4
    HAVING sum(n) = 0 AND sum(total) = 0 AND bool_and(lo IS NULL) AND bool_and(latest_at IS NULL)
), moved AS (
    DELETE FROM meter_buckets b
    WHERE b.meter_id = $1 AND b.site_id = $2 AND b.bucket >= $3 AND b.bucket < $4
      AND date_bin('15 minutes', b.bucket, '2000-01-01 00:00:00+00') <> b.bucket
      AND NOT EXISTS (SELECT 1 FROM cancelled c
                      WHERE c.quarter = date_bin('15 minutes', b.bucket, '2000-01-01 00:00:00+00')
                        AND c.billing_month = b.billing_month AND c.subject = b.subject AND c.groups = b.groups)
    RETURNING b.*, date_bin('15 minutes', b.bucket, '2000-01-01 00:00:00+00') AS quarter
)
INSERT INTO meter_buckets AS b (meter_id, site_id, bucket, billing_month, subject, groups, n, total,
                                lo, hi, latest_value, latest_at, latest_event_id)
SELECT meter_id, site_id, quarter, billing_month, subject, groups, sum(n), sum(total), min(lo), max(hi),
       (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1],
       max(latest_at),
       (array_agg(latest_event_id ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1]
FROM moved
GROUP BY meter_id, site_id, quarter, billing_month, subject, groups
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

-- name: merge_unique_values
-- The distinct values of the minutes in [$3, $4) moved into their quarter (a value seen in two
-- minutes of a quarter is kept once: the quarter's distinct values are the union).
WITH moved AS (
    DELETE FROM meter_unique_values
    WHERE meter_id = $1 AND site_id = $2 AND bucket >= $3 AND bucket < $4
      AND date_bin('15 minutes', bucket, '2000-01-01 00:00:00+00') <> bucket
    RETURNING *
)
INSERT INTO meter_unique_values (meter_id, site_id, bucket, billing_month, subject, groups, value)
SELECT DISTINCT meter_id, site_id, date_bin('15 minutes', bucket, '2000-01-01 00:00:00+00'), billing_month,
       subject, groups, value
FROM moved
ON CONFLICT DO NOTHING

-- name: drop_minute_rollups
-- The width-1 rollups (a minute over every subject and group, meters/rollup.py) of the merged range:
-- not kept below the watermark, where the minutes they sum are merged into quarters.
DELETE FROM meter_rollups WHERE meter_id = $1 AND site_id = $2 AND width = 1 AND bucket >= $3 AND bucket < $4
