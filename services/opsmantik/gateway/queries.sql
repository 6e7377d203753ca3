-- name: keys_by_hashes
-- Background refresh of every cached key: revocations and new limits take effect within the TTL.
SELECT k.key_hash, k.site_id, k.key_id, s.monthly_quota, s.hard_cap, s.rate_per_s, s.burst
FROM api_keys k JOIN sites s ON s.site_id = k.site_id
WHERE k.key_hash = ANY($1::bytea[]) AND k.revoked_at IS NULL

-- name: usage_of_sites
-- The usage cache's sites only (quota.py: the sites with a limit seen lately), never the whole
-- table: its cost follows the active tenants, not the number of sites. Primary key range per site.
SELECT site_id, month, events FROM site_usage_monthly WHERE site_id = ANY($2::uuid[]) AND month >= $1

-- name: closed_since
-- Closed months: a late event counts toward the quota of the month the worker books it into.
SELECT month FROM closed_months WHERE month >= $1

-- name: insert_outbox
INSERT INTO ingest_fallback_buffer (site_id, event_id, payload, received_at)
SELECT $1::uuid, e, p, $4::timestamptz FROM unnest($2::text[], $3::bytea[]) AS t (e, p)
RETURNING id, event_id

-- name: add_slo_requests
INSERT INTO slo_requests AS s (minute, instance, requests, errors_5xx, rejected_4xx, rate_limited,
                               within_500ms, events_by_status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
ON CONFLICT (minute, instance) DO UPDATE SET
    requests = s.requests + EXCLUDED.requests,
    errors_5xx = s.errors_5xx + EXCLUDED.errors_5xx,
    rejected_4xx = s.rejected_4xx + EXCLUDED.rejected_4xx,
    rate_limited = s.rate_limited + EXCLUDED.rate_limited,
    within_500ms = s.within_500ms + EXCLUDED.within_500ms,
    events_by_status = (
        SELECT coalesce(jsonb_object_agg(k, v), '{}'::jsonb) FROM (
            SELECT k, sum(v::bigint) AS v FROM (
                SELECT * FROM jsonb_each_text(s.events_by_status)
                UNION ALL SELECT * FROM jsonb_each_text(EXCLUDED.events_by_status)
            ) AS both_sides (k, v) GROUP BY k
        ) AS summed
    )

-- name: usage_row
SELECT site_id, month, events, quantity, overlimit_events, overlimit_quantity, updated_at
FROM site_usage_monthly WHERE site_id = $1 AND month = $2

-- name: outbox_depth
SELECT count(*) AS depth, extract(epoch FROM now() - min(created_at)) AS oldest_s
FROM ingest_fallback_buffer

-- name: add_sla_requests
-- The per-site SLA rollup (sla_rollup.py): one row per site and minute, added to.
INSERT INTO sla_requests AS s (site_id, minute, received, persisted, errors_5xx, errors_503,
                               rate_limited, quota_exceeded, invalid)
SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
ON CONFLICT (site_id, minute) DO UPDATE SET
    received = s.received + EXCLUDED.received, persisted = s.persisted + EXCLUDED.persisted,
    errors_5xx = s.errors_5xx + EXCLUDED.errors_5xx, errors_503 = s.errors_503 + EXCLUDED.errors_503,
    rate_limited = s.rate_limited + EXCLUDED.rate_limited,
    quota_exceeded = s.quota_exceeded + EXCLUDED.quota_exceeded, invalid = s.invalid + EXCLUDED.invalid
