"""The dispatcher's metrics (docs/operations.md "Usage alerts"; alerts in deploy/prometheus)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "opsmantik_alert_deliveries",
    "Webhook attempts by outcome: delivered (2xx), failed (retried later), parked (retry window over)",
    ["outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "opsmantik_alert_attempt_duration_seconds",
    "One delivery attempt: connect, send, read the answer (capped by the timeout)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
CROSSING_TO_DELIVERY = Histogram(
    "opsmantik_alert_delivery_latency_seconds",
    "From the crossing's commit (the outbox row) to the receiver's 2xx",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 600, 3600, 86400),
)
QUEUE_PENDING = Gauge("opsmantik_alert_queue_pending", "Webhooks not delivered yet and not parked")
QUEUE_OLDEST = Gauge(
    "opsmantik_alert_queue_oldest_seconds", "Age of the oldest pending webhook (0 when none)"
)
PARKED = Gauge("opsmantik_alert_parked", "Webhooks parked after their retry window (alerts resend)")
IN_FLIGHT = Gauge("opsmantik_alert_in_flight", "Deliveries in flight in this dispatcher")
