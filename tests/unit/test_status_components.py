"""Component states and the page's overall line from signals (services/opsmantik/status/components.py),
each rule at its edge."""

from dataclasses import replace

import pytest
from opsmantik.status import components as c
from opsmantik.status.components import Signals, derive, indicator

OK = Signals(broker_reachable=True, breaker_state="closed", db_reachable=True)


def states(s: Signals) -> dict[str, str]:
    return {x.id: x.status for x in derive(s)}


def test_all_operational_is_all_systems_operational():
    comps = derive(OK)
    assert [x.name for x in comps] == [
        "Ingest API",
        "Event queue",
        "Fallback buffer",
        "Billing ledger freshness",
        "Dashboard/usage API",
    ]
    assert set(states(OK).values()) == {c.OPERATIONAL}
    assert c.INDICATOR_WORDS[indicator(comps)] == "All systems operational"


def test_broker_down_is_a_partial_outage_while_the_outbox_takes_events():
    s = replace(OK, broker_reachable=False, breaker_state="open")
    got = states(s)
    assert got["event_queue"] == c.MAJOR and got["ingest_api"] == c.OPERATIONAL
    assert c.INDICATOR_WORDS[indicator(derive(s))] == "Partial outage"
    # with traffic, the ledger falls behind: said so
    assert states(replace(s, captured_events=10))["ledger_freshness"] == c.PARTIAL


def test_nothing_can_store_events_is_a_major_outage():
    s = replace(OK, broker_reachable=False, db_reachable=False)
    assert states(s)["ingest_api"] == c.MAJOR
    assert c.INDICATOR_WORDS[indicator(derive(s))] == "Major outage"


@pytest.mark.parametrize(
    ("requests", "errors", "want"),
    [
        (19, 19, c.OPERATIONAL),  # too few requests to judge
        (1000, 5, c.OPERATIONAL),  # 0.5 %: exactly the budget
        (1000, 6, c.PARTIAL),  # over the 99.5 % budget
        (1000, 499, c.PARTIAL),
        (1000, 500, c.MAJOR),  # half failing
    ],
)
def test_ingest_error_ratio_edges(requests, errors, want):
    s = replace(OK, sync_requests=requests, sync_errors_5xx=errors, sync_within_500ms=requests)
    assert states(s)["ingest_api"] == want


@pytest.mark.parametrize(("fast", "want"), [(950, c.OPERATIONAL), (949, c.DEGRADED)])
def test_ingest_latency_edge(fast, want):
    s = replace(OK, sync_requests=1000, sync_within_500ms=fast)
    assert states(s)["ingest_api"] == want
    if want == c.DEGRADED:
        assert c.INDICATOR_WORDS[indicator(derive(s))] == "Degraded performance"


@pytest.mark.parametrize(
    ("age", "pending", "parked", "want"),
    [
        (300.0, 5, 0, c.OPERATIONAL),
        (300.1, 5, 0, c.DEGRADED),
        (86400.0, 5, 0, c.DEGRADED),
        (86400.1, 5, 0, c.PARTIAL),
        (0.0, 0, 1, c.PARTIAL),
        (1e9, 0, 0, c.OPERATIONAL),
    ],
)
def test_outbox_age_edges(age, pending, parked, want):
    s = replace(OK, outbox_pending=pending, outbox_oldest_age_s=age, outbox_parked=parked)
    assert states(s)["fallback_buffer"] == want


@pytest.mark.parametrize(("lag", "want"), [(4999.9, c.OPERATIONAL), (5000.0, c.DEGRADED)])
def test_freshness_lag_edge(lag, want):
    s = replace(OK, ledgered_events=10, ledger_lag_max_ms=lag, last_ledgered_age_s=0)
    assert states(s)["ledger_freshness"] == want


@pytest.mark.parametrize(("age", "want"), [(120.0, c.OPERATIONAL), (120.1, c.PARTIAL), (None, c.PARTIAL)])
def test_ledger_stall_edge(age, want):
    s = replace(OK, captured_events=10, ledgered_events=0, last_ledgered_age_s=age)
    assert states(s)["ledger_freshness"] == want


@pytest.mark.parametrize(
    ("requests", "errors", "want"), [(4, 4, c.OPERATIONAL), (100, 4, c.OPERATIONAL), (100, 5, c.PARTIAL)]
)
def test_usage_api_edges(requests, errors, want):
    assert states(replace(OK, usage_requests=requests, usage_errors_5xx=errors))["usage_api"] == want


def test_database_down_takes_the_postgres_components_down():
    got = states(replace(OK, db_reachable=False))
    assert got == {
        "ingest_api": c.OPERATIONAL,
        "event_queue": c.OPERATIONAL,
        "fallback_buffer": c.MAJOR,
        "ledger_freshness": c.MAJOR,
        "usage_api": c.MAJOR,
    }


def test_maintenance_window_relabels_only_what_is_not_operational():
    s = replace(OK, broker_reachable=False, maintenance_active=True)
    got = states(s)
    assert got["event_queue"] == c.MAINTENANCE and got["ingest_api"] == c.OPERATIONAL
    assert indicator(derive(s), [], True) == "maintenance"
    assert indicator(derive(OK), [], True) == "maintenance"


def test_an_open_incident_raises_the_page_but_never_lowers_it():
    assert indicator(derive(OK), ["major"]) == "major"
    down = derive(replace(OK, broker_reachable=False, db_reachable=False))
    assert indicator(down, ["minor"]) == "critical"
