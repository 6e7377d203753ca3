"""Component states from live signals, and the page's overall state (pure logic, no I/O).

States and words follow hosted status pages (Atlassian Statuspage's component statuses and page
indicator). Thresholds are the SLO's (seed §1) where it names one; the rest are in docs/operations.md.
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATIONAL = "operational"
DEGRADED = "degraded_performance"
PARTIAL = "partial_outage"
MAJOR = "major_outage"
MAINTENANCE = "under_maintenance"
SEVERITY = {OPERATIONAL: 0, MAINTENANCE: 0, DEGRADED: 1, PARTIAL: 2, MAJOR: 3}
STATE_WORDS = {
    OPERATIONAL: "Operational",
    DEGRADED: "Degraded performance",
    PARTIAL: "Partial outage",
    MAJOR: "Major outage",
    MAINTENANCE: "Under maintenance",
}

# The page indicator (Statuspage: none/minor/major/critical, plus maintenance) and its one line.
INDICATOR_WORDS = {
    "none": "All systems operational",
    "minor": "Degraded performance",
    "major": "Partial outage",
    "critical": "Major outage",
    "maintenance": "Under maintenance",
}
INDICATOR_RANK = {"none": 0, "maintenance": 0, "minor": 1, "major": 2, "critical": 3}


@dataclass(frozen=True)
class ComponentDef:
    id: str
    name: str
    description: str


COMPONENTS: tuple[ComponentDef, ...] = (
    ComponentDef("ingest_api", "Ingest API", "POST /api/sync: events accepted and stored durably"),
    ComponentDef("event_queue", "Event queue", "The Kafka cluster that carries accepted events"),
    ComponentDef(
        "fallback_buffer",
        "Fallback buffer",
        "The Postgres outbox that stores events while the queue is unavailable",
    ),
    ComponentDef(
        "ledger_freshness",
        "Billing ledger freshness",
        "Time from acceptance to the event counting in usage (target under 5 s)",
    ),
    ComponentDef("usage_api", "Dashboard/usage API", "GET /api/usage and the billing dispute export"),
)
COMPONENT_IDS = tuple(c.id for c in COMPONENTS)

# Thresholds (why: the SLO's numbers, or the SLA's 24 h for the outbox).
MIN_REQUESTS = 20  # fewer requests in the window say nothing about a ratio
ERROR_BUDGET = 0.005  # availability target 99.5 %: more 5xx than this is an outage
MAJOR_ERROR_RATIO = 0.5  # half the requests failing: ingestion is down
FAST_SHARE = 0.95  # p95 < 500 ms: at least 95 % answered within 500 ms
FRESH_LAG_MS = 5000.0  # freshness target
OUTBOX_STUCK_S = 300.0  # the relay drains in seconds; 5 min of age means it is not draining
OUTBOX_SLA_S = 86400.0  # fallback events processed within 24 h (SLA §2.2)
LEDGER_STALL_S = 120.0  # events accepted but nothing ledgered for this long: the ledger stopped
USAGE_MIN_REQUESTS = 5
USAGE_ERROR_RATIO = 0.05


@dataclass(frozen=True)
class Signals:
    """What the refresher saw, over the last `window_s` seconds where it is a rate."""

    broker_reachable: bool
    breaker_state: str  # the gateway's Kafka breaker: closed, half_open, open
    db_reachable: bool
    sync_requests: int = 0
    sync_errors_5xx: int = 0
    sync_within_500ms: int = 0
    captured_events: int = 0  # events acknowledged in the window (all outcomes)
    ledgered_events: int = 0  # events the worker ledgered in the window
    ledger_lag_max_ms: float = 0.0  # worst freshness lag in the window
    last_ledgered_age_s: float | None = None  # since the last minute with ledgered events
    outbox_pending: int = 0
    outbox_oldest_age_s: float = 0.0
    outbox_parked: int = 0
    usage_requests: int = 0
    usage_errors_5xx: int = 0
    maintenance_active: bool = False


@dataclass(frozen=True)
class ComponentState:
    id: str
    name: str
    description: str
    status: str
    reason: str  # one sentence for people, no per-site data


def _ingest(s: Signals) -> tuple[str, str]:
    if not s.broker_reachable and not s.db_reachable:
        return MAJOR, "neither the event queue nor the fallback buffer can store events"
    if s.sync_requests >= MIN_REQUESTS:
        ratio = s.sync_errors_5xx / s.sync_requests
        if ratio >= MAJOR_ERROR_RATIO:
            return MAJOR, f"{ratio:.0%} of requests failed in the last minutes"
        if ratio > ERROR_BUDGET:
            return PARTIAL, f"{ratio:.1%} of requests failed in the last minutes"
        if s.sync_within_500ms / s.sync_requests < FAST_SHARE:
            return DEGRADED, "more than 5 % of requests took longer than 500 ms"
    return OPERATIONAL, "accepting events"


def _queue(s: Signals) -> tuple[str, str]:
    if not s.broker_reachable:
        return MAJOR, "the event queue is unreachable; events are stored in the fallback buffer"
    if s.breaker_state != "closed":
        return DEGRADED, "the queue is slow to acknowledge; some events go to the fallback buffer"
    return OPERATIONAL, "acknowledging events"


def _outbox(s: Signals) -> tuple[str, str]:
    if not s.db_reachable:
        return MAJOR, "the fallback buffer's database is unreachable"
    if s.outbox_pending and s.outbox_oldest_age_s > OUTBOX_SLA_S:
        return PARTIAL, "buffered events are older than 24 hours"
    if s.outbox_parked:
        return PARTIAL, "some buffered events need an operator"
    if s.outbox_pending and s.outbox_oldest_age_s > OUTBOX_STUCK_S:
        return DEGRADED, "buffered events are waiting for the event queue to return"
    return OPERATIONAL, "empty or draining" if s.outbox_pending else "empty"


def _freshness(s: Signals) -> tuple[str, str]:
    if not s.db_reachable:
        return MAJOR, "the ledger's database is unreachable"
    stalled = s.last_ledgered_age_s is None or s.last_ledgered_age_s > LEDGER_STALL_S
    if s.captured_events and not s.ledgered_events and stalled:
        return PARTIAL, "accepted events are not yet counted in usage"
    if not s.broker_reachable and s.captured_events:
        return PARTIAL, "events wait in the fallback buffer; usage counts are behind"
    if s.ledgered_events and s.ledger_lag_max_ms >= FRESH_LAG_MS:
        return DEGRADED, "usage counts lag by more than 5 seconds"
    return OPERATIONAL, "usage counts within seconds"


def _usage(s: Signals) -> tuple[str, str]:
    if not s.db_reachable:
        return MAJOR, "usage figures cannot be read"
    if s.usage_requests >= USAGE_MIN_REQUESTS and s.usage_errors_5xx / s.usage_requests >= USAGE_ERROR_RATIO:
        return PARTIAL, "some usage requests fail"
    return OPERATIONAL, "serving usage figures"


_RULES = {
    "ingest_api": _ingest,
    "event_queue": _queue,
    "fallback_buffer": _outbox,
    "ledger_freshness": _freshness,
    "usage_api": _usage,
}


def derive(s: Signals) -> list[ComponentState]:
    """Every component's state. During a maintenance window a component that is not operational
    shows "Under maintenance" (the window was announced 48 h ahead; SLA §2.1)."""
    out = []
    for c in COMPONENTS:
        status, reason = _RULES[c.id](s)
        if s.maintenance_active and status != OPERATIONAL:
            status, reason = MAINTENANCE, "scheduled maintenance in progress"
        out.append(ComponentState(c.id, c.name, c.description, status, reason))
    return out


def indicator(
    components: list[ComponentState],
    incident_impacts: list[str] = (),  # type: ignore[assignment]
    maintenance_active: bool = False,
) -> str:
    """The page indicator: the worst of the components and the unresolved incidents' impacts.

    critical ("Major outage") only when ingestion itself is down: the seed's P0. Any other
    component in partial or major outage makes the page a "Partial outage" (the rest still works).
    """
    by_id = {c.id: c.status for c in components}
    if by_id.get("ingest_api") == MAJOR:
        level = "critical"
    elif any(SEVERITY[c.status] >= SEVERITY[PARTIAL] for c in components):
        level = "major"
    elif any(c.status == DEGRADED for c in components):
        level = "minor"
    else:
        level = "none"
    for impact in incident_impacts:
        if impact in INDICATOR_RANK and INDICATOR_RANK[impact] > INDICATOR_RANK[level]:
            level = impact
    if level == "none" and (maintenance_active or any(c.status == MAINTENANCE for c in components)):
        level = "maintenance"
    return level
