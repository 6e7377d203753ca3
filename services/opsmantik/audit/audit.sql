-- Named queries of the capture audit (services/opsmantik/audit/store.py).

-- name: try_lock
-- One auditor at a time per topic (the follower and a one-shot `audit --month` share the tables).
SELECT pg_try_advisory_lock(hashtext('opsmantik-audit:' || $1::text))

-- name: unlock
SELECT pg_advisory_unlock(hashtext('opsmantik-audit:' || $1::text))

-- name: progress
SELECT kafka_partition, next_offset, worker_committed, high_watermark, updated_at
FROM audit_progress WHERE topic = $1 ORDER BY kafka_partition

-- name: ledgered_keys
SELECT i.site_id, i.event_id, i.kafka_partition, i.kafka_offset
FROM unnest($1::uuid[], $2::text[]) AS k (site_id, event_id)
JOIN ingest_idempotency i ON i.site_id = k.site_id AND i.event_id = k.event_id

-- name: dead_letters
SELECT d.kafka_partition, d.kafka_offset
FROM unnest($2::integer[], $3::bigint[]) AS k (p, o)
JOIN ingest_dead_letter d ON d.topic = $1 AND d.kafka_partition = k.p AND d.kafka_offset = k.o

-- name: known_sites
SELECT site_id FROM sites WHERE site_id = ANY($1::uuid[])

-- name: add_counts
INSERT INTO audit_counts AS c (topic, site, month, audited, ledgered, dead_lettered, ledger_rows)
SELECT $1, s, m, a, l, d, r
FROM unnest($2::text[], $3::date[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
     AS t (s, m, a, l, d, r)
ON CONFLICT (topic, site, month) DO UPDATE
SET audited = c.audited + EXCLUDED.audited, ledgered = c.ledgered + EXCLUDED.ledgered,
    dead_lettered = c.dead_lettered + EXCLUDED.dead_lettered, ledger_rows = c.ledger_rows + EXCLUDED.ledger_rows

-- name: add_findings
INSERT INTO audit_findings (topic, kafka_partition, kafka_offset, kind, site, site_id, event_id, month,
                            gateway_valid, detail)
SELECT $1, p, o, k, s, sid, e, m, g, d
FROM unnest($2::integer[], $3::bigint[], $4::text[], $5::text[], $6::uuid[], $7::text[], $8::date[],
            $9::boolean[], $10::text[]) AS t (p, o, k, s, sid, e, m, g, d)
ON CONFLICT DO NOTHING

-- name: save_progress
INSERT INTO audit_progress AS a (topic, kafka_partition, next_offset, worker_committed, high_watermark)
SELECT $1, p, n, c, h FROM unnest($2::integer[], $3::bigint[], $4::bigint[], $5::bigint[]) AS t (p, n, c, h)
ON CONFLICT (topic, kafka_partition) DO UPDATE
SET next_offset = greatest(a.next_offset, EXCLUDED.next_offset), worker_committed = EXCLUDED.worker_committed,
    high_watermark = EXCLUDED.high_watermark, updated_at = now()

-- name: resolve_findings
-- An unaccounted message that reached the ledger later (a replay), or was dead-lettered later
-- while not a valid gateway message, is accounted for now.
UPDATE audit_findings f SET resolved_at = now()
WHERE f.topic = $1 AND f.kind = 'unaccounted' AND f.resolved_at IS NULL
  AND (EXISTS (SELECT 1 FROM ingest_idempotency i WHERE i.site_id = f.site_id AND i.event_id = f.event_id)
       OR (NOT f.gateway_valid AND EXISTS (
           SELECT 1 FROM ingest_dead_letter d
           WHERE d.topic = f.topic AND d.kafka_partition = f.kafka_partition AND d.kafka_offset = f.kafka_offset)))
RETURNING kafka_partition, kafka_offset

-- name: totals
SELECT count(*) FILTER (WHERE kind = 'unaccounted' AND resolved_at IS NULL) AS unaccounted,
       count(*) FILTER (WHERE kind = 'breach') AS breaches
FROM audit_findings WHERE topic = $1

-- name: month_sites
WITH c AS (
    SELECT site, sum(audited)::bigint AS audited, sum(ledgered)::bigint AS ledgered,
           sum(dead_lettered)::bigint AS dead_lettered
    FROM audit_counts WHERE topic = $1 AND month = $2 GROUP BY site
), f AS (
    SELECT site, count(*) FILTER (WHERE kind = 'unaccounted' AND resolved_at IS NULL) AS unaccounted,
           count(*) FILTER (WHERE kind = 'breach') AS breaches
    FROM audit_findings WHERE topic = $1 AND month = $2 GROUP BY site
)
SELECT site, s.name, coalesce(c.audited, 0)::bigint AS audited, coalesce(c.ledgered, 0)::bigint AS ledgered,
       coalesce(c.dead_lettered, 0)::bigint AS dead_lettered, coalesce(f.unaccounted, 0)::bigint AS unaccounted,
       coalesce(f.breaches, 0)::bigint AS breaches
FROM c FULL JOIN f USING (site)
LEFT JOIN sites s ON s.site_id::text = site
ORDER BY site

-- name: month_findings
-- site_id: the uuid as text when the message named a real one (sla-report reads these keys).
SELECT kind, site, site_id::text AS site_id, event_id, kafka_partition, kafka_offset, detail, found_at
FROM audit_findings
WHERE topic = $1 AND month = $2 AND (kind = 'breach' OR resolved_at IS NULL)
ORDER BY kafka_partition, kafka_offset
LIMIT $3

-- name: vanished
-- Ledger rows the audit confirmed (it audited their own message) that are gone since, per site:
-- a row deleted after the audit passed its message. A full scan of the ledger: one-shot and
-- about once a minute in --follow, not every cycle.
WITH seen AS (
    SELECT site, sum(ledger_rows)::bigint AS n FROM audit_counts WHERE topic = $1 GROUP BY site
), present AS (
    SELECT i.site_id::text AS site, count(*)::bigint AS n
    FROM ingest_idempotency i
    JOIN audit_progress p ON p.topic = $1 AND p.kafka_partition = i.kafka_partition
    WHERE i.kafka_offset < p.next_offset
    GROUP BY i.site_id
)
SELECT seen.site, seen.n - coalesce(present.n, 0) AS vanished
FROM seen LEFT JOIN present USING (site)
WHERE seen.n > coalesce(present.n, 0)
