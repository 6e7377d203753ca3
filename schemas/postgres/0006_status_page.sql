-- The public status page (services/status/): incidents written by `opsmantik incident`, and the
-- daily per-component rollups behind its 90-day uptime bars. Scheduled maintenance comes from
-- maintenance_windows (migration 0005, `opsmantik maintenance add`).

-- An incident as hosted status pages show it: a name, an impact, and a timeline of updates whose
-- latest status (investigating → identified → monitoring → resolved) is the incident's status.
CREATE TABLE status_incidents (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    impact       text NOT NULL CHECK (impact IN ('none', 'minor', 'major', 'critical')),
    status       text NOT NULL CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    components   text[] NOT NULL DEFAULT '{}',   -- component ids (services/status/components.py)
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz
);
-- The page lists unresolved incidents and the recently resolved ones.
CREATE INDEX status_incidents_recent ON status_incidents (created_at DESC);

CREATE TABLE status_incident_updates (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES status_incidents (id) ON DELETE CASCADE,
    status       text NOT NULL CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    body         text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_incident_updates_by_incident ON status_incident_updates (incident_id, created_at);

-- One row per component per UTC day per gateway process: how many background checks saw the
-- component in each state. Added to (never overwritten), like slo_requests, so several gateways
-- share a day. The day's uptime = checks not in partial or major outage / checks.
CREATE TABLE status_component_daily (
    day          date NOT NULL,
    component    text NOT NULL,
    instance     text NOT NULL,
    checks       bigint NOT NULL DEFAULT 0,
    degraded     bigint NOT NULL DEFAULT 0,
    partial      bigint NOT NULL DEFAULT 0,
    major        bigint NOT NULL DEFAULT 0,
    maintenance  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, component, instance)
);
