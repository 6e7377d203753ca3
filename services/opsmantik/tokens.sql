-- Operator tokens (services/opsmantik/tokens.py; table: schemas/postgres/0010_operator_tokens.sql).

-- name: create_token
INSERT INTO operator_tokens (token_hash, token_prefix, name) VALUES ($1, $2, $3)
RETURNING token_id, created_at

-- name: list_tokens
SELECT token_id, token_prefix, name, created_at, revoked_at FROM operator_tokens
ORDER BY created_at, token_id

-- name: revoke_token
UPDATE operator_tokens SET revoked_at = now()
WHERE token_id = $1 AND revoked_at IS NULL
RETURNING token_id

-- name: token_by_hash
SELECT token_id, name FROM operator_tokens WHERE token_hash = $1 AND revoked_at IS NULL
