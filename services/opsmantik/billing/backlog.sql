-- What is still on its way to the ledger, or was set aside: read by reconcile and slo-report.

-- name: backlog
-- Outbox rows by state (the seed's SLA: fallback events processed within 24 h) and dead letters.
SELECT (SELECT count(*) FROM ingest_fallback_buffer WHERE parked_at IS NULL) AS outbox_pending,
       (SELECT count(*) FROM ingest_fallback_buffer WHERE parked_at IS NOT NULL) AS outbox_parked,
       (SELECT count(*) FROM ingest_fallback_buffer
        WHERE received_at < now() - interval '24 hours') AS outbox_older_than_24h,
       (SELECT count(*) FROM ingest_dead_letter
        WHERE created_at >= $1 AND created_at < $2) AS dead_letters_month,
       (SELECT count(*) FROM ingest_dead_letter) AS dead_letters_total
