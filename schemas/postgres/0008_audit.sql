-- The capture audit (services/audit/, docs/reliability.md "The capture audit"): an independent
-- reader of the ingest topic, behind the worker group's committed offsets, that checks every
-- message is in the ledger (same site_id, event_id) or in ingest_dead_letter (topic, partition,
-- offset). Its progress and findings live here so a restart resumes where it stopped.

-- Every offset below next_offset of the partition has been audited.
CREATE TABLE audit_progress (
    topic             text NOT NULL,
    kafka_partition   integer NOT NULL,
    next_offset       bigint NOT NULL CHECK (next_offset >= 0),
    worker_committed  bigint NOT NULL,              -- the worker group's offset at the last cycle
    high_watermark    bigint NOT NULL,              -- the partition's end at the last cycle
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);

-- Per site and month (UTC month of the Kafka message timestamp): messages audited and how
-- each was accounted for. `site` is the message's site_id, else its Kafka key, else '' (text:
-- a hostile message's key need not be a uuid).
CREATE TABLE audit_counts (
    topic          text NOT NULL,
    site           text NOT NULL,
    month          date NOT NULL CHECK (extract(day FROM month) = 1),
    audited        bigint NOT NULL DEFAULT 0,
    ledgered       bigint NOT NULL DEFAULT 0,
    dead_lettered  bigint NOT NULL DEFAULT 0,
    -- messages that are their ledger row's own copy (the row records this partition and offset):
    -- later, fewer ledger rows at audited offsets than this means rows vanished after the audit
    ledger_rows    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, site, month)
);

-- 'unaccounted': neither ledgered nor dead-lettered although the worker committed past it.
-- 'breach': dead-lettered although the gateway would have accepted it (a valid event.v1 message
-- of an existing site). An unaccounted message found later in the ledger (an operator's replay)
-- is marked resolved; breaches stay.
CREATE TABLE audit_findings (
    topic            text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('unaccounted', 'breach')),
    site             text NOT NULL,
    site_id          uuid,                          -- when `site` is a uuid
    event_id         text,
    month            date NOT NULL CHECK (extract(day FROM month) = 1),
    gateway_valid    boolean NOT NULL,
    detail           text NOT NULL,
    found_at         timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
CREATE INDEX audit_findings_open ON audit_findings (topic, month) WHERE resolved_at IS NULL;
