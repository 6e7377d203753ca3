-- The ledger's month partitions (migration 0009, services/opsmantik/db/partitions.py).

-- name: ensure_partition
SELECT ledger_ensure_partition($1::date)

-- name: archived_months
SELECT month FROM ledger_archives WHERE month = ANY($1::date[])

-- name: partition_months
-- Every month that has a partition, from the partition bounds Postgres keeps.
SELECT substring(c.relname FROM 'ingest_idempotency_p([0-9]{4}_[0-9]{2})$') AS label
FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
WHERE h.inhparent = 'ingest_idempotency'::regclass
ORDER BY 1

-- name: is_partitioned
SELECT to_regproc('ledger_ensure_partition') IS NOT NULL
