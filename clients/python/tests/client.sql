-- Queries of the producer-client tests.

-- name: ledger_by_seq
-- Every event the tests send carries properties.seq: each number once means nothing lost and
-- nothing billed twice.
SELECT count(*) AS rows, count(DISTINCT properties->>'seq') AS distinct_seq,
       min((properties->>'seq')::int) AS min_seq, max((properties->>'seq')::int) AS max_seq
FROM ingest_idempotency WHERE site_id = $1;

-- name: ledger_event_ids
SELECT event_id FROM ingest_idempotency WHERE site_id = $1;
