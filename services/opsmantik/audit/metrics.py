"""The audit's Prometheus metrics (every name starts with opsmantik_audit_). The P0 alert is on
opsmantik_audit_unaccounted_events > 0 (deploy/prometheus)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

UNACCOUNTED = Gauge(
    "opsmantik_audit_unaccounted_events",
    "Messages below the worker's committed offset in neither the ledger nor the dead letters",
)
BREACHES = Gauge(
    "opsmantik_audit_breach_dead_letters",
    "Dead letters of messages the gateway would have accepted (acknowledged, not billed)",
)
VANISHED = Gauge(
    "opsmantik_audit_vanished_ledger_rows",
    "Ledger rows the audit had confirmed that are no longer in the ledger",
)
AUDITED_OFFSET = Gauge(
    "opsmantik_audit_audited_offset", "Every offset below this has been audited", ["partition"]
)
WORKER_OFFSET = Gauge(
    "opsmantik_audit_worker_committed_offset",
    "The worker group's committed offset seen by the last cycle",
    ["partition"],
)
BEHIND = Gauge("opsmantik_audit_behind_messages", "Worker-committed messages not audited yet")
MESSAGES = Counter("opsmantik_audit_messages_total", "Audited messages by outcome", ["outcome"])
CYCLES = Counter("opsmantik_audit_cycles_total", "Audit cycles by result", ["result"])
LAST_SUCCESS = Gauge("opsmantik_audit_last_success_timestamp_seconds", "End of the last successful cycle")


def count(ledgered: int, dead_lettered: int, unaccounted: int) -> None:
    MESSAGES.labels("ledgered").inc(ledgered)
    MESSAGES.labels("dead_lettered").inc(dead_lettered)
    MESSAGES.labels("unaccounted").inc(unaccounted)


def export(unaccounted: int, breaches: int, offsets: dict[int, tuple[int, int, int]]) -> None:
    """offsets: partition -> (audited up to, worker committed, high watermark)."""
    UNACCOUNTED.set(unaccounted)
    BREACHES.set(breaches)
    behind = 0
    for p, (audited, committed, _high) in offsets.items():
        AUDITED_OFFSET.labels(str(p)).set(audited)
        WORKER_OFFSET.labels(str(p)).set(committed)
        behind += max(committed - audited, 0)
    BEHIND.set(behind)
    LAST_SUCCESS.set(time.time())
