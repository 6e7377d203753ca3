"""Reconcile's report logic (services/opsmantik/billing/reconcile.py), on records built in memory."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from opsmantik.billing.reconcile import Report, SiteDrift, render
from opsmantik.months import parse_month, previous_month


def site(n: int, **drift: int) -> SiteDrift:
    base = dict(ledger_events=10, ledger_quantity=20, ledger_overlimit_events=1, ledger_overlimit_quantity=2)
    inv = {
        k.replace("ledger_", "invoice_"): v + drift.get(k.replace("ledger_", ""), 0) for k, v in base.items()
    }
    return SiteDrift(site_id=uuid.UUID(int=n), name=f"s{n}", **base, **inv)


def test_a_report_without_drift_is_ok() -> None:
    r = Report(date(2026, 11, 1), datetime.now(UTC), [site(1), site(2)])
    assert r.ok and r.drifting == []
    assert r.as_dict()["ok"] is True


def test_any_field_drifting_names_the_site() -> None:
    r = Report(date(2026, 11, 1), datetime.now(UTC), [site(1), site(2, overlimit_quantity=-3)])
    assert not r.ok and r.drifting == [str(uuid.UUID(int=2))]
    text = render(r)
    assert f"DRIFT site {uuid.UUID(int=2)} (s2): overlimit_quantity -3" in text
    sites = r.as_dict()["sites"]
    assert isinstance(sites, list) and sites[1]["drift_overlimit_quantity"] == -3


def test_months() -> None:
    assert parse_month("2026-01") == date(2026, 1, 1)
    assert previous_month(date(2026, 1, 1)) == date(2025, 12, 1)
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month("2026-1x")


def test_drift_ratio_for_the_alerts() -> None:
    from opsmantik.billing.reconcile import drift_ratio

    month, now = date(2026, 11, 1), datetime.now(UTC)
    assert drift_ratio(Report(month, now, [site(1), site(2)])) == 0.0
    assert drift_ratio(Report(month, now, [site(1, events=-1), site(2, events=1)])) == 2 / 20  # |±1| each
    assert drift_ratio(Report(month, now, [])) == 0.0
