-- Operator tokens and event lookup (issue 26).
--
-- An operator token (`opsmantik tokens create --operator`) reads every site's data on the read
-- routes that take one (docs/design.md "Operator tokens"); it is never a site key (the ingest
-- routes refuse it). Stored as site keys are (0001 api_keys): only the SHA-256 of the full token,
-- which is 128 random bits plus a MAC tag, so a fast hash is enough and lookups stay O(1).
CREATE TABLE operator_tokens (
    token_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash    bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    token_prefix  text NOT NULL,                        -- first characters, to tell tokens apart
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- GET /api/v1/events/{event_id} and ?status=dead_lettered (services/opsmantik/gateway/
-- events_lookup.sql) read the dead letters and the outbox by site: without these, each lookup
-- would scan them whole. Dead letters are rare; the outbox is written only while the broker is
-- unavailable, so the extra index costs the fallback path one b-tree insert per event.
CREATE INDEX ingest_dead_letter_site_event ON ingest_dead_letter (site_id, event_id);
CREATE INDEX ingest_dead_letter_site_recent ON ingest_dead_letter (site_id, created_at DESC);
CREATE INDEX ingest_fallback_buffer_site_event ON ingest_fallback_buffer (site_id, event_id);
