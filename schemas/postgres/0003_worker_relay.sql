-- Worker, relay and reconcile: outbox claim index, dead letters, reconcile results.

-- Outbox: a row the broker refuses for good (e.g. too large) is parked, not retried
-- forever at the head of the queue. The relay claims `parked_at IS NULL` rows in id
-- order with FOR UPDATE SKIP LOCKED; this partial index is exactly that scan.
ALTER TABLE ingest_fallback_buffer
    ADD COLUMN attempts    integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error  text,
    ADD COLUMN parked_at   timestamptz;
CREATE INDEX ingest_fallback_buffer_pending ON ingest_fallback_buffer (id) WHERE parked_at IS NULL;

-- Messages on the ingest topic the worker cannot ledger (not JSON, not event.v1, unknown
-- site). Recorded in the same transaction as the batch's ledger rows, then acked: never
-- silently skipped, never blocking the partition. Reconcile reports their count.
CREATE TABLE ingest_dead_letter (
    topic            text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    site_id          text,
    event_id         text,
    reason           text NOT NULL,
    payload          bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

-- One row per site per reconcile run: the invoice minus the ledger (0 = no drift).
CREATE TABLE reconcile_results (
    run_at                   timestamptz NOT NULL,
    month                    date NOT NULL CHECK (extract(day FROM month) = 1),
    site_id                  uuid NOT NULL,
    ledger_events            bigint NOT NULL,
    ledger_quantity          bigint NOT NULL,
    invoice_events           bigint NOT NULL,
    invoice_quantity         bigint NOT NULL,
    drift_events             bigint NOT NULL,
    drift_quantity           bigint NOT NULL,
    drift_overlimit_events   bigint NOT NULL,
    drift_overlimit_quantity bigint NOT NULL,
    PRIMARY KEY (month, site_id, run_at)
);
