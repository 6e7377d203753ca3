-- Crossing decisions (services/opsmantik/alerts/crossings.py), in the ledger's or a void's
-- transaction: the site's rows are under its site lock (worker lock_sites / meters lock_site).

-- name: site_rules
SELECT r.rule_id, r.site_id, r.kind, r.meter_id, r.threshold, s.monthly_quota, s.hard_cap,
       m.slug, m.backfilled_at
FROM alert_rules r
JOIN sites s ON s.site_id = r.site_id
LEFT JOIN meters m ON m.meter_id = r.meter_id
WHERE r.site_id = ANY($1::uuid[])

-- name: states
-- The states of every rule of the touched (site, period) pairs: a pair per site and month, not
-- a key per rule (asyncpg encodes each array element: 100 rules were 200 of them per batch).
SELECT s.rule_id, s.period, s.value, s.basis, s.over
FROM unnest($1::uuid[], $2::date[]) AS k(site_id, period)
JOIN alert_rules r ON r.site_id = k.site_id
JOIN alert_state s ON s.rule_id = r.rule_id AND s.period = k.period

-- name: invoice_events
SELECT u.site_id, u.month, u.events
FROM unnest($1::uuid[], $2::date[]) AS k(site_id, month)
JOIN site_usage_monthly u ON u.site_id = k.site_id AND u.month = k.month

-- name: meter_total
-- A meter's total for one site and billing period (COUNT: events, SUM: the values), voids
-- included (negative entries in the booked month, docs/meters.md "Voids").
SELECT coalesce(sum(total), 0) FROM meter_buckets
WHERE meter_id = $1 AND site_id = $2 AND billing_month = $3

-- name: advance_states
-- The meter rules' running totals of the batch's (meter, site, billing period) plus its increment:
-- a row per meter, not per rule. A rule written by save_states after this (first seen,
-- recomputed, crossed or resolved) gets its exact value there.
UPDATE alert_state s SET value = s.value + d.delta
FROM unnest($1::uuid[], $2::uuid[], $3::date[], $4::numeric[]) AS d(meter_id, site_id, period, delta),
     alert_rules r
WHERE r.meter_id = d.meter_id AND r.site_id = d.site_id AND s.rule_id = r.rule_id
  AND s.period = d.period

-- name: save_states
INSERT INTO alert_state AS a (rule_id, period, value, basis, over)
SELECT * FROM unnest($1::uuid[], $2::date[], $3::numeric[], $4::timestamptz[], $5::boolean[])
ON CONFLICT (rule_id, period) DO UPDATE
SET value = EXCLUDED.value, basis = EXCLUDED.basis, over = EXCLUDED.over,
    changed_at = CASE WHEN a.over <> EXCLUDED.over THEN now() ELSE a.changed_at END

-- name: insert_webhooks
INSERT INTO alert_outbox (webhook_id, rule_id, site_id, event_type, body)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::bytea[])
