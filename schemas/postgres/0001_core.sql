-- Core tables. Every tenant table is keyed by site_id first so it can later be
-- distributed by site (e.g. Citus) without a redesign.

CREATE TABLE sites (
    site_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    monthly_quota  bigint CHECK (monthly_quota >= 0),   -- soft: events past it are `overlimit`
    hard_cap       bigint CHECK (hard_cap >= 0),        -- hard: the gateway answers 429 quota_exceeded
    rate_per_s     double precision NOT NULL DEFAULT 1000 CHECK (rate_per_s > 0),
    burst          integer NOT NULL DEFAULT 2000 CHECK (burst > 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored only as SHA-256 of the full key: keys are 256-bit random,
-- so a fast hash is enough (no dictionary to attack), and lookups stay O(1).
CREATE TABLE api_keys (
    site_id     uuid NOT NULL REFERENCES sites (site_id),
    key_id      uuid NOT NULL DEFAULT gen_random_uuid(),
    key_hash    bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    key_prefix  text NOT NULL,                          -- first characters, to tell keys apart
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (site_id, key_id)
);

-- The ledger: one row per (site_id, event_id), forever (no dedupe window).
CREATE TABLE ingest_idempotency (
    site_id          uuid NOT NULL REFERENCES sites (site_id),
    event_id         text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    event_type       text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    usage_month      date NOT NULL,                     -- UTC month of occurred_at
    billing_month    date NOT NULL,                     -- usage_month, or first open month if it was closed
    quantity         bigint NOT NULL CHECK (quantity BETWEEN 1 AND 1000000000000),
    billing_class    text NOT NULL CHECK (billing_class IN ('included', 'overlimit')),
    path             text NOT NULL CHECK (path IN ('kafka', 'fallback')),
    received_at      timestamptz NOT NULL,
    ledgered_at      timestamptz NOT NULL DEFAULT now(),
    kafka_partition  integer,
    kafka_offset     bigint,
    properties       jsonb,
    PRIMARY KEY (site_id, event_id)
);
CREATE INDEX ingest_idempotency_billing ON ingest_idempotency (site_id, billing_month);

-- The invoice: per site and billing month, only ever incremented in the same
-- transaction that inserts the ledger rows it counts.
CREATE TABLE site_usage_monthly (
    site_id             uuid NOT NULL REFERENCES sites (site_id),
    month               date NOT NULL CHECK (extract(day FROM month) = 1),
    events              bigint NOT NULL DEFAULT 0,
    quantity            bigint NOT NULL DEFAULT 0,
    overlimit_events    bigint NOT NULL DEFAULT 0,
    overlimit_quantity  bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, month)
);

-- Months whose invoice is closed: late events are billed in the first open month.
CREATE TABLE closed_months (
    month      date PRIMARY KEY CHECK (extract(day FROM month) = 1),
    closed_at  timestamptz NOT NULL DEFAULT now()
);

-- The outbox: events acknowledged while the broker was unavailable. The relay
-- claims rows in id order (FOR UPDATE SKIP LOCKED), produces them, then deletes them.
CREATE TABLE ingest_fallback_buffer (
    id           bigserial PRIMARY KEY,
    site_id      uuid NOT NULL,
    event_id     text NOT NULL,
    payload      bytea NOT NULL,                        -- the Kafka message value (schemas/event.v1.json)
    received_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
