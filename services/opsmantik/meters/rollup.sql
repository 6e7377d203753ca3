-- The meters' hour and day rollups recomputed from the minute buckets
-- (services/opsmantik/meters/rollup.py, docs/meters.md "Tiers"): after a void, and by the bench's
-- SQL-written month. $1 the meters, $2 the site, [$3, $4) the range (whole UTC hours for the
-- hours, whole UTC days for the days), $5 the billing months (NULL: all).

-- name: clear_minutes
-- Width 1: the minute over every subject and group (above the compaction watermark only).
DELETE FROM meter_rollups
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND width = 1 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))

-- name: fill_minutes
INSERT INTO meter_rollups (meter_id, site_id, width, bucket, billing_month, subject, groups, n, total,
                           lo, hi, latest_value, latest_at, latest_event_id)
SELECT meter_id, site_id, 1, bucket, billing_month, '', '{}'::jsonb, sum(n), sum(total), min(lo), max(hi),
       (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1],
       max(latest_at),
       (array_agg(latest_event_id ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1]
FROM meter_buckets
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))
GROUP BY meter_id, site_id, bucket, billing_month

-- name: clear_hours
DELETE FROM meter_rollups
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND width = 60 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))

-- name: fill_hours
-- The merge of aggregate.sql add_buckets over every minute (or quarter) bucket of the range.
INSERT INTO meter_rollups (meter_id, site_id, width, bucket, billing_month, subject, groups, n, total,
                           lo, hi, latest_value, latest_at, latest_event_id)
SELECT meter_id, site_id, 60, date_bin('1 hour', bucket, '2000-01-01 00:00:00+00'), billing_month,
       subject, groups, sum(n), sum(total), min(lo), max(hi),
       (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1],
       max(latest_at),
       (array_agg(latest_event_id ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1]
FROM meter_buckets
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))
GROUP BY meter_id, site_id, 4, billing_month, subject, groups

-- name: clear_days
DELETE FROM meter_rollups
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND width = 1440 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))

-- name: fill_days
-- From the hours (each the exact merge of its minutes).
INSERT INTO meter_rollups (meter_id, site_id, width, bucket, billing_month, subject, groups, n, total,
                           lo, hi, latest_value, latest_at, latest_event_id)
SELECT meter_id, site_id, 1440, date_bin('1 day', bucket, '2000-01-01 00:00:00+00'), billing_month,
       subject, groups, sum(n), sum(total), min(lo), max(hi),
       (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1],
       max(latest_at),
       (array_agg(latest_event_id ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1]
FROM meter_rollups
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND width = 60 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))
GROUP BY meter_id, site_id, 4, billing_month, subject, groups

-- name: clear_hour_values
DELETE FROM meter_rollup_values
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND width = 60 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))

-- name: fill_hour_values
INSERT INTO meter_rollup_values (meter_id, site_id, width, bucket, billing_month, subject, groups, value)
SELECT DISTINCT meter_id, site_id, 60, date_bin('1 hour', bucket, '2000-01-01 00:00:00+00'), billing_month,
       subject, groups, value
FROM meter_unique_values
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))

-- name: clear_day_values
DELETE FROM meter_rollup_values
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND width = 1440 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))

-- name: fill_day_values
INSERT INTO meter_rollup_values (meter_id, site_id, width, bucket, billing_month, subject, groups, value)
SELECT DISTINCT meter_id, site_id, 1440, date_bin('1 day', bucket, '2000-01-01 00:00:00+00'), billing_month,
       subject, groups, value
FROM meter_rollup_values
WHERE meter_id = ANY($1::uuid[]) AND site_id = $2 AND width = 60 AND bucket >= $3 AND bucket < $4
  AND ($5::date[] IS NULL OR billing_month = ANY($5::date[]))

-- name: clear_meter
DELETE FROM meter_rollups WHERE meter_id = $1

-- name: clear_meter_values
DELETE FROM meter_rollup_values WHERE meter_id = $1
