"""The snapshot rendered: the summary JSON's shape, the HTML's content, the month figures' words,
the 90-day bars."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import orjson
from opsmantik.config import Settings
from opsmantik.status import figures, page, summary
from opsmantik.status.components import COMPONENT_IDS, Signals, derive, indicator
from opsmantik.status.model import (
    BAR_DAYS,
    Incident,
    IncidentUpdate,
    Maintenance,
    Snapshot,
    build_bars,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def snapshot(**over) -> Snapshot:
    comps = derive(Signals(broker_reachable=False, breaker_state="open", db_reachable=True))
    rows = [
        {
            "day": NOW.date() - timedelta(days=1),
            "component": "event_queue",
            "checks": 1000,
            "degraded": 0,
            "partial": 0,
            "major": 10,
            "maintenance": 0,
        }
    ]
    slo = [
        figures.availability(10_000, 3),
        figures.latency(12, 12),
        figures.freshness(100, 100),
        figures.integrity(0, 0, 0),
        figures.accuracy(NOW, 0, 500),
    ]
    inc = Incident(
        7,
        "Queue unreachable",
        "major",
        "identified",
        ["event_queue"],
        NOW,
        NOW,
        None,
        [IncidentUpdate(9, "identified", "Broker restarted; events are buffered.", NOW)],
    )
    past = Incident(
        3,
        "Slow usage counts",
        "minor",
        "resolved",
        [],
        NOW - timedelta(days=2),
        NOW,
        NOW - timedelta(days=1),
        [IncidentUpdate(4, "resolved", "Fixed.", NOW)],
    )
    maint = Maintenance(1, "Postgres upgrade", NOW + timedelta(days=3), NOW + timedelta(days=3, hours=1), NOW)
    snap = Snapshot(
        NOW,
        indicator(comps, ["major"]),
        comps,
        build_bars(rows, NOW.date()),
        "2026-11",
        slo,
        [inc, past],
        [maint],
        NOW,
        True,
    )
    return replace(snap, **over)


def test_summary_has_the_hosted_status_page_shape():
    body = orjson.loads(summary.render(snapshot(), Settings()))
    assert set(body) == {"page", "status", "components", "incidents", "scheduled_maintenances", "slo"}
    assert body["page"]["url"] == "https://status.opsmantik.com"
    assert body["status"] == {"indicator": "major", "description": "Partial outage"}
    assert [c["id"] for c in body["components"]] == list(COMPONENT_IDS)
    assert {c["status"] for c in body["components"]} <= {
        "operational",
        "degraded_performance",
        "partial_outage",
        "major_outage",
        "under_maintenance",
    }
    assert [i["id"] for i in body["incidents"]] == ["7"]  # unresolved only, as the summary API has it
    assert body["incidents"][0]["incident_updates"][0]["body"].startswith("Broker restarted")
    assert body["scheduled_maintenances"][0]["status"] == "scheduled"
    assert [o["id"] for o in body["slo"]["objectives"]] == [
        "availability",
        "latency",
        "freshness",
        "integrity",
        "accuracy",
    ]


def test_html_reads_without_javascript_and_names_everything():
    html = page.render(snapshot(), Settings())
    assert "<script" not in html.lower() and "onclick" not in html.lower()
    assert 'id="overall"' in html and ">Partial outage<" in html
    for name in (
        "Ingest API",
        "Event queue",
        "Fallback buffer",
        "Billing ledger freshness",
        "Dashboard/usage API",
        "Availability",
        "Latency",
        "Freshness",
        "Data integrity",
        "Billing accuracy",
        "Queue unreachable",
        "Slow usage counts",
        "Postgres upgrade",
    ):
        assert name in html, name
    assert "prefers-color-scheme:dark" in html and 'name="viewport"' in html


def test_html_escapes_incident_text():
    inc = Incident(
        1,
        "<b>x</b>",
        "minor",
        "investigating",
        [],
        NOW,
        NOW,
        None,
        [IncidentUpdate(1, "investigating", "<script>alert(1)</script>", NOW)],
    )
    html = page.render(snapshot(incidents=[inc]), Settings())
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_bars_are_90_days_with_the_days_figure_in_the_title():
    snap = snapshot()
    bars = snap.bars["event_queue"]
    assert len(bars) == BAR_DAYS and bars[-1].day == NOW.date()
    assert bars[0].day == NOW.date() - timedelta(days=89)
    assert bars[-2].title == "27 Nov 2026: 99.00 % uptime (1,000 checks)"
    assert bars[-1].title == "28 Nov 2026: no data"
    assert snap.uptime_90d("event_queue") == 0.99 and snap.uptime_90d("ingest_api") is None
    html = page.render(snap, Settings())
    assert 'title="27 Nov 2026: 99.00 % uptime (1,000 checks)"' in html
    assert html.count('<span class="b-') == BAR_DAYS * len(COMPONENT_IDS)


def test_figures_in_words_at_their_edges():
    assert figures.availability(1000, 5).met and not figures.availability(1000, 6).met
    assert "99.400 % of 1,000 ingest requests" in figures.availability(1000, 6).sentence
    assert figures.pct(0.999999) == "99.999 %"  # never rounded up to 100 %
    assert figures.freshness(100, 99).met and not figures.freshness(100, 98).met
    assert not figures.latency(10, 9).met and figures.latency(0, 0).met
    assert not figures.integrity(0, 1, 0).met and "1 set aside" in figures.integrity(0, 1, 0).sentence
    assert not figures.accuracy(NOW, 1, 100).met
    assert figures.accuracy(None, 0, 0).value_text == "not yet checked"


def test_maintenance_status_by_time():
    m = Maintenance(1, "x", NOW, NOW + timedelta(hours=1), NOW)
    assert [m.status(NOW - timedelta(seconds=1)), m.status(NOW), m.status(NOW + timedelta(hours=1))] == [
        "scheduled",
        "in_progress",
        "completed",
    ]
    assert date(2026, 11, 28) == NOW.date()
