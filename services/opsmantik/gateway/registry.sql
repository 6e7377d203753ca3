-- The gateway registry (services/opsmantik/gateway/registry.py); table in 0007_gateway_registry.sql.

-- name: heartbeat
-- One round trip: upsert our row, count the others heard from within $4 seconds, plus us.
-- (The CTE's insert is not visible to the SELECT of the same statement, hence `+ 1`.)
WITH beat AS (
    INSERT INTO gateway_instances AS g (instance_id, host, pid) VALUES ($1, $2, $3)
    ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now()
    RETURNING instance_id
)
SELECT count(*) + 1 AS live FROM gateway_instances
WHERE heartbeat_at > now() - make_interval(secs => $4) AND instance_id <> $1

-- name: leave
DELETE FROM gateway_instances WHERE instance_id = $1

-- name: prune
-- Rows of gateways gone for an hour: kept that long for an operator's look, then dropped.
DELETE FROM gateway_instances WHERE heartbeat_at < now() - interval '1 hour'
