"""Billing month and billing class rules (services/opsmantik/billing/rules.py)."""

from __future__ import annotations

import uuid
from datetime import date

from hypothesis import given
from hypothesis import strategies as st
from opsmantik.billing.rules import INCLUDED, OVERLIMIT, assign_classes, billing_month
from opsmantik.months import next_month

A, B = uuid.UUID(int=1), uuid.UUID(int=2)
NOV, DEC, JAN = date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)


def test_next_month_rolls_the_year() -> None:
    assert next_month(NOV) == DEC and next_month(DEC) == JAN


def test_billing_month_is_the_usage_month_when_open() -> None:
    assert billing_month(NOV, frozenset()) == NOV


def test_billing_month_skips_every_closed_month() -> None:
    assert billing_month(NOV, frozenset({NOV, DEC})) == JAN
    assert billing_month(NOV, frozenset({DEC})) == NOV


def test_batch_straddling_the_quota_splits_exactly() -> None:
    rows = [(A, NOV)] * 5
    assert assign_classes(rows, {(A, NOV): 98}, {A: 100}) == [INCLUDED] * 2 + [OVERLIMIT] * 3


def test_no_quota_means_all_included_and_zero_quota_all_overlimit() -> None:
    rows = [(A, NOV), (B, NOV)]
    assert assign_classes(rows, {}, {A: None, B: 0}) == [INCLUDED, OVERLIMIT]


def test_counts_are_per_site_and_billing_month() -> None:
    rows = [(A, NOV), (A, DEC), (B, NOV), (A, NOV)]
    assert assign_classes(rows, {(A, NOV): 1}, {A: 2, B: 1}) == [INCLUDED, INCLUDED, INCLUDED, OVERLIMIT]


@given(start=st.integers(0, 300), quota=st.one_of(st.none(), st.integers(0, 300)), n=st.integers(0, 300))
def test_included_never_exceeds_the_quota(start: int, quota: int | None, n: int) -> None:
    classes = assign_classes([(A, NOV)] * n, {(A, NOV): start}, {A: quota})
    included = classes.count(INCLUDED)
    expected = n if quota is None else max(0, min(n, quota - start))
    assert included == expected
    assert classes == sorted(classes)  # all included rows come before any overlimit row
