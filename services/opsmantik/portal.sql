-- Portal tokens (services/opsmantik/portal.py; table: schemas/postgres/0013_portal_tokens.sql).

-- name: site_exists
SELECT EXISTS (SELECT 1 FROM sites WHERE site_id = $1)

-- name: create_token
INSERT INTO portal_tokens (token_id, site_id, created_at, expires_at, created_by)
VALUES ($1, $2, $3, $4, $5)

-- name: delete_expired
-- Bounded, so a mint never waits on a big backlog; the next mint deletes the rest.
DELETE FROM portal_tokens WHERE token_id IN (
    SELECT token_id FROM portal_tokens WHERE expires_at < $1 LIMIT 1000
)

-- name: token_active
-- The one read per dashboard request: by primary key.
SELECT EXISTS (
    SELECT 1 FROM portal_tokens
    WHERE token_id = $1 AND site_id = $2 AND revoked_at IS NULL AND expires_at > $3
)

-- name: revoke_token
UPDATE portal_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL
RETURNING token_id

-- name: revoke_site
UPDATE portal_tokens SET revoked_at = now()
WHERE site_id = $1 AND revoked_at IS NULL AND expires_at > now()
RETURNING token_id

-- name: list_tokens
SELECT token_id, site_id, created_at, expires_at, created_by, revoked_at FROM portal_tokens
WHERE site_id = $1 AND expires_at > $2 ORDER BY created_at, token_id
