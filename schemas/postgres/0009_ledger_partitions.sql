-- The ledger partitioned by usage month (docs/scaling.md "The ledger at a year of traffic").
--
-- ingest_idempotency becomes a table range-partitioned by usage_month, one partition per UTC
-- month (ingest_idempotency_pYYYY_MM). The gateway accepts an event only when occurred_at is
-- within [received_at - 35 days, received_at + 5 min], so new rows only ever land in the (at most
-- three) months that window touches: the hot set is bounded and older partitions are read-only,
-- ready to be archived (`opsmantik archive`) once their month is closed.
--
-- Keys: the primary key must contain the partition key, so it is (site_id, event_id, usage_month).
-- Exactly-once across months is kept by the worker (services/opsmantik/worker/ledger.py): under a
-- per-site lock it looks an event_id up in every month the gateway could still accept when the
-- copy was received before inserting it, so the same event_id sent with a time in another month is
-- still billed once.
--
-- Stored once: the (site_id, billing_month) index of 0001 indexed every row a second time although
-- billing_month = usage_month for all but the late rows (a closed usage month billed in the first
-- open month); a partition already is "the rows of a month", so only the late rows keep an index.
--
-- billing_voids referenced the ledger by (site_id, event_id), which is no longer unique on its own;
-- an archived partition must also be droppable while its voids stay. The void command already
-- reads the ledger row under the close lock before booking (services/opsmantik/billing/voids.py).
--
-- Existing rows are moved unchanged, inside migrate's transaction.

-- Months whose partition was written to Parquet and dropped (`opsmantik archive`): the worker
-- never recreates their partition, `billing verify` and the dispute export read them from
-- `location` and check them against the month's statements and `file_sha256`.
CREATE TABLE ledger_archives (
    month        date PRIMARY KEY CHECK (extract(day FROM month) = 1),
    location     text NOT NULL,                    -- directory or fsspec URL of the month's files
    rows         bigint NOT NULL CHECK (rows >= 0),
    file_sha256  text NOT NULL CHECK (file_sha256 ~ '^[0-9a-f]{64}$'),
    manifest     jsonb NOT NULL,                   -- the manifest written beside the Parquet file
    archived_at  timestamptz NOT NULL DEFAULT now()
);

-- Create the partition of month m when it does not exist; true when it was created. Refused for an
-- archived month (its rows live in Parquet, a new partition would let a replay bill them again).
CREATE FUNCTION ledger_ensure_partition(m date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    part text := 'ingest_idempotency_p' || to_char(m, 'YYYY_MM');
BEGIN
    IF extract(day FROM m) <> 1 THEN
        RAISE EXCEPTION 'ledger partition month % is not the first day of a month', m;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM ledger_archives a WHERE a.month = m) THEN
        RAISE EXCEPTION 'ledger month % is archived: its partition is not recreated', to_char(m, 'YYYY-MM');
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE %I PARTITION OF ingest_idempotency FOR VALUES FROM (%L) TO (%L)',
                       part, m, (m + interval '1 month')::date);
    EXCEPTION WHEN duplicate_table THEN
        RETURN false;  -- another session created it first
    END;
    RETURN true;
END $$;

ALTER TABLE billing_voids DROP CONSTRAINT billing_voids_site_id_event_id_fkey;
ALTER TABLE ingest_idempotency RENAME TO ingest_idempotency_unpartitioned;
ALTER INDEX ingest_idempotency_pkey RENAME TO ingest_idempotency_unpartitioned_pkey;
DROP INDEX ingest_idempotency_billing;

CREATE TABLE ingest_idempotency (
    site_id          uuid NOT NULL REFERENCES sites (site_id),
    event_id         text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    event_type       text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    usage_month      date NOT NULL CHECK (extract(day FROM usage_month) = 1),  -- UTC month of occurred_at
    billing_month    date NOT NULL,                     -- usage_month, or first open month if it was closed
    quantity         bigint NOT NULL CHECK (quantity BETWEEN 1 AND 1000000000000),
    billing_class    text NOT NULL CHECK (billing_class IN ('included', 'overlimit')),
    path             text NOT NULL CHECK (path IN ('kafka', 'fallback')),
    received_at      timestamptz NOT NULL,
    ledgered_at      timestamptz NOT NULL DEFAULT now(),
    kafka_partition  integer,
    kafka_offset     bigint,
    properties       jsonb,
    PRIMARY KEY (site_id, event_id, usage_month)
) PARTITION BY RANGE (usage_month);

-- Late rows only (billed in a later month than their usage month): with the month partitions
-- this is the one extra index the billing queries need (billing.sql, reconcile.sql).
CREATE INDEX ingest_idempotency_late ON ingest_idempotency (site_id, billing_month)
    WHERE billing_month <> usage_month;

-- A partition for every month already in the ledger and for the months around today.
SELECT ledger_ensure_partition(m)
FROM (
    SELECT DISTINCT usage_month AS m FROM ingest_idempotency_unpartitioned
    UNION
    SELECT generate_series(date_trunc('month', (now() AT TIME ZONE 'UTC') - interval '35 days'),
                           date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
                           interval '1 month')::date
) AS months
ORDER BY m;

INSERT INTO ingest_idempotency (site_id, event_id, event_type, occurred_at, usage_month, billing_month,
    quantity, billing_class, path, received_at, ledgered_at, kafka_partition, kafka_offset, properties)
SELECT site_id, event_id, event_type, occurred_at, usage_month, billing_month,
       quantity, billing_class, path, received_at, ledgered_at, kafka_partition, kafka_offset, properties
FROM ingest_idempotency_unpartitioned;

DROP TABLE ingest_idempotency_unpartitioned;
