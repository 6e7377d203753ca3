-- Usage alerts (docs/alerts.md): rules per site, the state of each rule per billing period
-- (decided by the worker in the ledger's transaction), and the outbox of webhooks the dispatcher
-- delivers (Standard Webhooks).

-- A rule: a built-in line of the site's quota/hard cap, or a meter threshold. The signing secret
-- is not stored: it is HMAC-SHA256(OPSMANTIK_ALERTS_SIGNING_SECRET, rule_id || secret_salt),
-- recomputed by the dispatcher to sign, so a copy of the database alone cannot forge a webhook.
CREATE TABLE alert_rules (
    rule_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    site_id      uuid NOT NULL REFERENCES sites (site_id),
    kind         text NOT NULL CHECK (kind IN ('quota_80', 'quota_100', 'hard_cap', 'meter')),
    meter_id     uuid REFERENCES meters (meter_id) ON DELETE CASCADE,
    threshold    numeric CHECK (threshold > 0),
    url          text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    secret_salt  bytea NOT NULL CHECK (length(secret_salt) = 16),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'meter') = (meter_id IS NOT NULL AND threshold IS NOT NULL))
);
CREATE INDEX alert_rules_site ON alert_rules (site_id);

-- One row per rule and billing period once a batch or a void of the site touched it. `over`:
-- the rule has fired (and not been resolved) in this period. `value`: the meter's total for the
-- site and period (meter rules: a running sum kept from the batches' increments; `basis` is the
-- meter's backfilled_at it was computed under, a backfill makes it recomputed); quota rules keep
-- the invoice's events last seen (informative only: the invoice row is read each time).
CREATE TABLE alert_state (
    rule_id     uuid NOT NULL REFERENCES alert_rules (rule_id) ON DELETE CASCADE,
    period      date NOT NULL CHECK (extract(day FROM period) = 1),
    value       numeric NOT NULL,
    basis       timestamptz,
    over        boolean NOT NULL DEFAULT false,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, period)
);

-- The webhooks to deliver. webhook_id is the Standard Webhooks `webhook-id`, the same on every
-- attempt; body is the exact JSON sent (the bytes signed). `window_start` begins the retry
-- window (creation, or `alerts resend`); a failure past OPSMANTIK_DISPATCHER_RETRY_FOR_S parks it.
CREATE TABLE alert_outbox (
    webhook_id       text PRIMARY KEY,
    rule_id          uuid NOT NULL REFERENCES alert_rules (rule_id) ON DELETE CASCADE,
    site_id          uuid NOT NULL,
    event_type       text NOT NULL,
    body             bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    window_start     timestamptz NOT NULL DEFAULT now(),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'parked')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX alert_outbox_site ON alert_outbox (site_id, created_at);
-- The dispatcher's gauges read the rows not delivered (pending and parked) only.
CREATE INDEX alert_outbox_open ON alert_outbox (created_at) WHERE status <> 'delivered';
