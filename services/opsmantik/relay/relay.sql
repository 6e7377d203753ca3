-- name: claim
-- Oldest pending rows first; rows another relay holds are skipped, so several relays
-- drain in parallel without producing a row twice. Backed by ingest_fallback_buffer_pending.
SELECT id, site_id, event_id, payload FROM ingest_fallback_buffer
WHERE parked_at IS NULL
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED

-- name: delete_rows
DELETE FROM ingest_fallback_buffer WHERE id = ANY($1::bigint[])

-- name: note_failure
-- $3: park the rows (the broker refuses them for good); they stay for an operator.
UPDATE ingest_fallback_buffer
SET attempts = attempts + 1, last_error = $2, parked_at = CASE WHEN $3 THEN now() END
WHERE id = ANY($1::bigint[])

-- name: depth
SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending,
       count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,
       coalesce(extract(epoch FROM now() - min(received_at) FILTER (WHERE parked_at IS NULL)), 0)::float8
           AS oldest_age_s
FROM ingest_fallback_buffer
