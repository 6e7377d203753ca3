-- Meters (docs/meters.md): the event's subject in the ledger, global meter definitions and their
-- exact aggregates, written by the worker in the ledger's transaction.

-- The site's own customer an event is about (event.v1 `subject`, a CloudEvent's subject):
-- 1..256 characters, or NULL when the event has none.
ALTER TABLE ingest_idempotency ADD COLUMN subject text
    CHECK (subject IS NULL OR length(subject) BETWEEN 1 AND 256);

-- A meter: defined by the operator, aggregated per site. `value_property` and each group-by
-- path are JSONPaths of the safe subset in services/opsmantik/meters/jsonpath.py, read from the
-- event's data (an /api/sync event's properties, a CloudEvent's data).
CREATE TABLE meters (
    meter_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug            text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    event_type      text NOT NULL CHECK (length(event_type) BETWEEN 1 AND 64),  -- '*': every type
    aggregation     text NOT NULL CHECK (aggregation IN
                        ('COUNT', 'SUM', 'AVG', 'MIN', 'MAX', 'UNIQUE_COUNT', 'LATEST')),
    value_property  text,                      -- NULL for COUNT; '$quantity' for the built-in meter
    group_by        jsonb NOT NULL DEFAULT '{}',  -- {"name": "$.path", ...}
    builtin         boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    backfilled_at   timestamptz                -- when `meters backfill` last rebuilt it from the ledger
);

INSERT INTO meters (slug, event_type, aggregation, value_property, builtin) VALUES
    ('events', '*', 'COUNT', NULL, true),
    ('quantity', '*', 'SUM', '$quantity', true);

-- One row per meter, site, minute (UTC), billing month, subject ('' for none) and group values.
-- billing_month is part of the key so the built-in meters filtered to a billing month equal its
-- statement (late events are billed in a later month than the minute they occurred in).
-- n: events counted; total: the sum of their values (COUNT: n); lo/hi: min and max; latest_*:
-- the value of the event latest by (occurred_at, event_id).
CREATE TABLE meter_buckets (
    meter_id         uuid NOT NULL REFERENCES meters (meter_id) ON DELETE CASCADE,
    site_id          uuid NOT NULL,
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
    PRIMARY KEY (meter_id, site_id, bucket, billing_month, subject, groups)
);

-- UNIQUE_COUNT: every distinct value per bucket key (exact; no sketch).
CREATE TABLE meter_unique_values (
    meter_id         uuid NOT NULL REFERENCES meters (meter_id) ON DELETE CASCADE,
    site_id          uuid NOT NULL,
    bucket           timestamptz NOT NULL,
    billing_month    date NOT NULL,
    subject          text NOT NULL,
    groups           jsonb NOT NULL,
    value            text NOT NULL,
    PRIMARY KEY (meter_id, site_id, bucket, billing_month, subject, groups, value)
);
