-- Live gateways, for sharing each site's rate limit (docs/scaling.md): every gateway process
-- upserts its row every OPSMANTIK_GATEWAY_HEARTBEAT_S and counts the rows heard from within
-- OPSMANTIK_GATEWAY_DEAD_AFTER_S; each takes rate/N. A clean stop deletes its row; a killed
-- gateway's row simply ages out. Timestamps are Postgres's now(): one clock for every host.
CREATE TABLE gateway_instances (
    instance_id   text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gateway_instances_heartbeat ON gateway_instances (heartbeat_at);
