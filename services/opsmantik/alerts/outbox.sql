-- The webhook outbox, dispatcher side (services/opsmantik/alerts/outbox.py).

-- name: claim
-- Due rows, oldest first; SKIP LOCKED so several dispatchers never take the same row. The claim
-- is a lease: next_attempt_at moves past the attempt's timeout, so a dispatcher killed mid-delivery
-- leaves the row due again once the lease ends (the same webhook_id is sent again).
WITH due AS (
    SELECT webhook_id FROM alert_outbox
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE alert_outbox o
SET attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => $2),
    -- The retry window starts at the first attempt (a dispatcher down for a day still retries a day).
    window_start = CASE WHEN o.attempts = 0 THEN now() ELSE o.window_start END
FROM due, alert_rules r
WHERE o.webhook_id = due.webhook_id AND r.rule_id = o.rule_id
RETURNING o.webhook_id, o.rule_id, o.body, o.attempts, o.window_start, o.created_at, r.url, r.secret_salt

-- name: delivered
UPDATE alert_outbox
SET status = 'delivered', delivered_at = now(), last_status = $2, last_error = NULL
WHERE webhook_id = $1 AND status = 'pending'
RETURNING created_at, delivered_at

-- name: failed
-- $3: the next attempt's delay; $4: the retry window. Past the window the row is parked.
UPDATE alert_outbox
SET last_status = $2, last_error = $5,
    status = CASE WHEN now() >= window_start + make_interval(secs => $4) THEN 'parked' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => $3)
WHERE webhook_id = $1 AND status = 'pending'
RETURNING status

-- name: resend
-- A parked (or delivered) webhook back in the queue, due now, with a new retry window; the same
-- webhook_id, so a receiver that already has it can tell.
UPDATE alert_outbox
SET status = 'pending', next_attempt_at = now(), window_start = now(), delivered_at = NULL
WHERE webhook_id = $1
RETURNING webhook_id

-- name: deliveries
SELECT o.webhook_id, o.rule_id, o.site_id, o.event_type, o.status, o.attempts, o.created_at,
       o.next_attempt_at, o.last_status, o.last_error, o.delivered_at
FROM alert_outbox o
WHERE ($1::uuid IS NULL OR o.site_id = $1) AND ($2::text IS NULL OR o.status = $2)
ORDER BY o.created_at DESC, o.webhook_id
LIMIT $3

-- name: queue
-- The dispatcher's gauges: pending rows, the oldest pending row's age, parked rows.
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')), 0)
           AS oldest_s,
       count(*) FILTER (WHERE status = 'parked') AS parked
FROM alert_outbox
WHERE status <> 'delivered'
