"""The usage alerts' notifications as docs/alerts.md defines them, computed apart from
opsmantik.alerts: the property tests (tests/unit/test_alert_crossings_property.py,
tests/integration/test_alerts.py) recount each value from the ledger rows and voids and hand the
sequence of decisions here."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from decimal import Decimal
from typing import TypeVar

CROSSED = "usage.threshold.crossed"
RESOLVED = "usage.threshold.resolved"
T = TypeVar("T", bound=Hashable)  # a transaction
R = TypeVar("R", bound=Hashable)  # a rule
P = TypeVar("P", bound=Hashable)  # a period

Notification = tuple[T, R, P, str, Decimal, Decimal]  # txn, rule, period, type, value, line


def line(kind: str, threshold: Decimal | None, quota: int | None, cap: int | None) -> Decimal | None:
    """quota-80 at ⌈0.8 × quota⌉ events, quota-100 at the quota, hard-cap at the cap, a meter rule
    at its threshold; a zero quota or cap (or its 80 %) is reached by the first event. None: the
    site has no such limit (the rule decides nothing)."""
    if kind == "meter":
        return threshold
    limit = cap if kind == "hard_cap" else quota
    if limit is None:
        return None
    if kind == "quota_80":
        limit = (limit * 4 + 4) // 5  # ⌈0.8 × limit⌉ in integers
    return Decimal(max(1, limit))


def notifications(
    decisions: Iterable[tuple[T, R, P, Decimal, Decimal | None]],
) -> tuple[list[tuple[T, R, P, str, Decimal, Decimal]], dict[tuple[R, P], bool]]:
    """`decisions`, in ledger order: each (transaction, rule, period, value, line) a transaction
    decided (a rule of a site whose (site, period) it touched). A rule starts under its line in
    each period; each change of "value ≥ line" is a notification of that transaction. Returns the
    notifications and, per (rule, period) decided, whether it ends over its line."""
    over: dict[tuple[R, P], bool] = {}
    out: list[tuple[T, R, P, str, Decimal, Decimal]] = []
    for txn, rule, period, value, at in decisions:
        if at is None:
            continue  # no quota/cap now: the rule keeps its state
        now_over = value >= at
        if now_over != over.get((rule, period), False):
            out.append((txn, rule, period, CROSSED if now_over else RESOLVED, value, at))
        over[(rule, period)] = now_over
    return out, over
