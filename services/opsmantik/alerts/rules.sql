-- Alert rules (services/opsmantik/alerts/rules.py).

-- name: site_limits
SELECT monthly_quota, hard_cap FROM sites WHERE site_id = $1

-- name: meter_for_rule
SELECT meter_id, slug, aggregation FROM meters WHERE slug = $1

-- name: count_site_rules
SELECT count(*) FROM alert_rules WHERE site_id = $1

-- name: lock_site_rules
-- Serialises creates of one site, so the per-site cap holds under concurrent creates.
SELECT pg_advisory_xact_lock(hashtextextended('opsmantik.alert_rules:' || $1::uuid::text, 0))

-- name: insert_rule
INSERT INTO alert_rules (site_id, kind, meter_id, threshold, url, secret_salt)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING rule_id, created_at

-- name: list_rules
-- Every rule (of one site when $1 is not NULL) with its delivery counts.
SELECT r.rule_id, r.site_id, r.kind, m.slug AS meter, r.threshold, r.url, r.created_at,
       count(o.*) FILTER (WHERE o.status = 'pending') AS pending,
       count(o.*) FILTER (WHERE o.status = 'delivered') AS delivered,
       count(o.*) FILTER (WHERE o.status = 'parked') AS parked
FROM alert_rules r
LEFT JOIN meters m ON m.meter_id = r.meter_id
LEFT JOIN alert_outbox o ON o.rule_id = r.rule_id
WHERE $1::uuid IS NULL OR r.site_id = $1
GROUP BY r.rule_id, m.slug
ORDER BY r.site_id, r.created_at, r.rule_id

-- name: delete_rule
DELETE FROM alert_rules WHERE rule_id = $1 RETURNING rule_id
