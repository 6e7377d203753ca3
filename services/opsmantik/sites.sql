-- name: create_site
INSERT INTO sites (name, monthly_quota, hard_cap, rate_per_s, burst)
VALUES ($1, $2, $3, $4, $5)
RETURNING site_id, name, monthly_quota, hard_cap, rate_per_s, burst, created_at

-- name: list_sites
SELECT s.site_id, s.name, s.monthly_quota, s.hard_cap, s.rate_per_s, s.burst, s.created_at,
       count(k.key_id) FILTER (WHERE k.revoked_at IS NULL) AS active_keys
FROM sites s LEFT JOIN api_keys k ON k.site_id = s.site_id
GROUP BY s.site_id ORDER BY s.created_at, s.site_id

-- name: create_key
INSERT INTO api_keys (site_id, key_hash, key_prefix) VALUES ($1, $2, $3)
RETURNING key_id

-- name: revoke_key
UPDATE api_keys SET revoked_at = now()
WHERE key_id = $1 AND revoked_at IS NULL
RETURNING site_id

-- name: key_by_hash
SELECT k.site_id, k.key_id, s.monthly_quota, s.hard_cap, s.rate_per_s, s.burst
FROM api_keys k JOIN sites s ON s.site_id = k.site_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL
