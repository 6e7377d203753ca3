-- Meter rollups (docs/meters.md "Tiers"): hour and day aggregates of meter_buckets and
-- meter_unique_values, so a query reads O(windows × groups) rows instead of every minute of its
-- range (services/opsmantik/meters/rollup.sql). `width` is the tier in minutes: 60 (a UTC hour) or
-- 1440 (a UTC day); `bucket` its start. A rollup row is the merge of the meter_buckets rows of the
-- same key in [bucket, bucket + width) (n and total add, lo/hi combine, latest the later by
-- (occurred_at, event_id)); it exists iff at least one such row exists. Written in the same
-- transaction (and statement) as the minute buckets by the worker, recomputed from them by a void,
-- rebuilt by `meters backfill`; compaction moves minutes within their hour, so it changes none.
-- Width 1 (meter_rollups only): a minute's buckets merged over every subject and group (subject
-- '', groups '{}'): what MINUTE windows without a subject or group read (one row a minute instead
-- of one per key). Kept at and after the compaction watermark only: compaction deletes them below.
CREATE TABLE meter_rollups (
    meter_id         uuid NOT NULL REFERENCES meters (meter_id) ON DELETE CASCADE,
    site_id          uuid NOT NULL,
    width            smallint NOT NULL CHECK (width IN (1, 60, 1440)),
    bucket           timestamptz NOT NULL,
    billing_month    date NOT NULL,
    subject          text NOT NULL,
    groups           jsonb NOT NULL,
    n                bigint NOT NULL,
    total            numeric NOT NULL,
    lo               numeric,
    hi               numeric,
    latest_value     numeric,
    latest_at        timestamptz,
    latest_event_id  text,
    PRIMARY KEY (meter_id, site_id, width, bucket, billing_month, subject, groups)
);

-- UNIQUE_COUNT: the distinct values per rollup key (the union of its minutes' values).
CREATE TABLE meter_rollup_values (
    meter_id         uuid NOT NULL REFERENCES meters (meter_id) ON DELETE CASCADE,
    site_id          uuid NOT NULL,
    width            smallint NOT NULL CHECK (width IN (60, 1440)),
    bucket           timestamptz NOT NULL,
    billing_month    date NOT NULL,
    subject          text NOT NULL,
    groups           jsonb NOT NULL,
    value            text NOT NULL,
    PRIMARY KEY (meter_id, site_id, width, bucket, billing_month, subject, groups, value)
);

-- The existing buckets' rollups, computed here (a database with data needs no other step).
-- The hours from the buckets, the days from the hours (the same merge as rollup.sql).
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
GROUP BY meter_id, site_id, 4, billing_month, subject, groups;

INSERT INTO meter_rollups (meter_id, site_id, width, bucket, billing_month, subject, groups, n, total,
                           lo, hi, latest_value, latest_at, latest_event_id)
SELECT meter_id, site_id, 1440, date_bin('1 day', bucket, '2000-01-01 00:00:00+00'), billing_month,
       subject, groups, sum(n), sum(total), min(lo), max(hi),
       (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1],
       max(latest_at),
       (array_agg(latest_event_id ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1]
FROM meter_rollups WHERE width = 60
GROUP BY meter_id, site_id, 4, billing_month, subject, groups;

INSERT INTO meter_rollups (meter_id, site_id, width, bucket, billing_month, subject, groups, n, total,
                           lo, hi, latest_value, latest_at, latest_event_id)
SELECT meter_id, site_id, 1, bucket, billing_month, '', '{}'::jsonb, sum(n), sum(total), min(lo), max(hi),
       (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1],
       max(latest_at),
       (array_agg(latest_event_id ORDER BY latest_at DESC, latest_event_id COLLATE "C" DESC)
            FILTER (WHERE latest_at IS NOT NULL))[1]
FROM meter_buckets
WHERE bucket >= coalesce((SELECT compacted_before FROM meter_compaction), '-infinity')
GROUP BY meter_id, site_id, bucket, billing_month;

INSERT INTO meter_rollup_values (meter_id, site_id, width, bucket, billing_month, subject, groups, value)
SELECT DISTINCT meter_id, site_id, 60, date_bin('1 hour', bucket, '2000-01-01 00:00:00+00'), billing_month,
       subject, groups, value
FROM meter_unique_values;

INSERT INTO meter_rollup_values (meter_id, site_id, width, bucket, billing_month, subject, groups, value)
SELECT DISTINCT meter_id, site_id, 1440, date_bin('1 day', bucket, '2000-01-01 00:00:00+00'), billing_month,
       subject, groups, value
FROM meter_rollup_values WHERE width = 60;
