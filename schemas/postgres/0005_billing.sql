-- Billing you can close, correct, verify and refund (docs/billing.md): statements of closed
-- months, append-only voids, announced maintenance windows, the per-site SLA rollup.

-- One statement per site per closed month, recorded by `opsmantik billing close`: the frozen
-- invoice (net of voids booked in the month) and the SHA-256 of the site's ledger entries for
-- the month in the canonical order and encoding of services/billing/canonical.py. Quantities
-- summed over events are numeric, as the invoice's are (0004).
CREATE TABLE billing_statements (
    site_id             uuid NOT NULL,
    month               date NOT NULL CHECK (extract(day FROM month) = 1),
    ledger_rows         bigint NOT NULL,     -- ledger rows billed in the month (late ones included)
    ledger_quantity     numeric NOT NULL,
    late_rows           bigint NOT NULL,     -- of which usage_month < billing_month
    voids               bigint NOT NULL,     -- void entries booked in the month (adjustments included)
    voided_quantity     numeric NOT NULL,
    events              bigint NOT NULL,     -- the invoice: rows minus voids
    quantity            numeric NOT NULL,
    overlimit_events    bigint NOT NULL,
    overlimit_quantity  numeric NOT NULL,
    sha256              text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    closed_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, month)
);

-- Voids: one append-only entry per voided event (who, when, why). It takes the event off the
-- invoice of the month it was billed in (booked_month = billed_month) or, when that month is
-- closed, is a negative adjustment in the first open month (booked_month > billed_month).
-- The ledger row itself stays: a re-sent event_id still finds it and is not billed again.
CREATE TABLE billing_voids (
    site_id        uuid NOT NULL,
    event_id       text NOT NULL,
    billed_month   date NOT NULL CHECK (extract(day FROM billed_month) = 1),
    booked_month   date NOT NULL CHECK (extract(day FROM booked_month) = 1 AND booked_month >= billed_month),
    quantity       bigint NOT NULL,
    billing_class  text NOT NULL CHECK (billing_class IN ('included', 'overlimit')),
    reason         text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    voided_by      text NOT NULL CHECK (length(voided_by) BETWEEN 1 AND 200),
    voided_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, event_id),
    FOREIGN KEY (site_id, event_id) REFERENCES ingest_idempotency (site_id, event_id)
);
CREATE INDEX billing_voids_booked ON billing_voids (site_id, booked_month);

CREATE FUNCTION billing_voids_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'billing_voids is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER billing_voids_append_only BEFORE UPDATE OR DELETE ON billing_voids
    FOR EACH ROW EXECUTE FUNCTION billing_voids_append_only();

-- Maintenance windows (`opsmantik maintenance add`, refused unless >= 48 h ahead). The SLA
-- report excludes a window only when it was announced >= 48 h before it started; the status
-- page lists them.
CREATE TABLE maintenance_windows (
    id          bigserial PRIMARY KEY,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);

-- The gateway's per-site SLA rollup of POST /api/sync (seed §2.1), one row per site per minute
-- with traffic, added to (never overwritten) by every gateway process: not a row per request.
CREATE TABLE sla_requests (
    site_id         uuid NOT NULL,
    minute          timestamptz NOT NULL,
    received        bigint NOT NULL DEFAULT 0,  -- authenticated requests of the site
    persisted       bigint NOT NULL DEFAULT 0,  -- answered 200 (captured durably)
    errors_5xx      bigint NOT NULL DEFAULT 0,  -- any 5xx (503 included)
    errors_503      bigint NOT NULL DEFAULT 0,
    rate_limited    bigint NOT NULL DEFAULT 0,  -- 429 rate_limited (security: excluded)
    quota_exceeded  bigint NOT NULL DEFAULT 0,  -- 429 quota_exceeded (business: excluded)
    invalid         bigint NOT NULL DEFAULT 0,  -- 400/413/415 (invalid payload: excluded)
    PRIMARY KEY (site_id, minute)
);
