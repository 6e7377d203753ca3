-- SLO rollups, one row per minute per process, added to (never overwritten) so several
-- gateways and workers can flush into the same minute. Read by /status and slo-report.

-- Gateway: requests to /api/sync by class, and how many answered within 500 ms.
CREATE TABLE slo_requests (
    minute          timestamptz NOT NULL,
    instance        text NOT NULL,              -- host:pid of the gateway
    requests        bigint NOT NULL DEFAULT 0,
    errors_5xx      bigint NOT NULL DEFAULT 0,
    rejected_4xx    bigint NOT NULL DEFAULT 0,  -- includes 429
    rate_limited    bigint NOT NULL DEFAULT 0,  -- 429 only
    within_500ms    bigint NOT NULL DEFAULT 0,
    events_by_status jsonb NOT NULL DEFAULT '{}', -- {"accepted": n, "overlimit": n, ...}
    PRIMARY KEY (minute, instance)
);

-- Worker: freshness = ledger commit time minus received_at, per ledgered event.
CREATE TABLE slo_freshness (
    minute        timestamptz NOT NULL,
    instance      text NOT NULL,                -- host:pid of the worker
    events        bigint NOT NULL DEFAULT 0,
    within_1s     bigint NOT NULL DEFAULT 0,
    within_5s     bigint NOT NULL DEFAULT 0,
    lag_max_ms    double precision NOT NULL DEFAULT 0,
    lag_sum_ms    double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, instance)
);
