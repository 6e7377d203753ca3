"""Retry decisions and waits: which answers are retried, and never sooner than the server asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from opsmantik_client.retry import (
    Action,
    Backoff,
    classify,
    pause_after_success,
    rejected_indexes,
    retry_after_s,
    server_wait_s,
)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, Action.DONE),
        (None, Action.RETRY),
        (429, Action.RETRY),
        (503, Action.RETRY),
        (500, Action.RETRY),
        (502, Action.RETRY),
        (408, Action.RETRY),
        (400, Action.REJECT),
        (401, Action.REJECT),
        (415, Action.REJECT),
        (404, Action.REJECT),
        (413, Action.SPLIT),
    ],
)
def test_classify(status: int | None, action: Action) -> None:
    assert classify(status) is action


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_s("3", now) == 3.0
    assert retry_after_s(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert retry_after_s(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s("-1", now) is None


def test_server_wait_prefers_retry_after_then_ratelimit_reset_when_exhausted() -> None:
    assert server_wait_s({"Retry-After": "2", "RateLimit-Remaining": "0", "RateLimit-Reset": "9"}) == 2
    assert server_wait_s({"ratelimit-remaining": "0", "ratelimit-reset": "4"}) == 4
    assert server_wait_s({"RateLimit-Remaining": "1", "RateLimit-Reset": "4"}) is None
    assert server_wait_s({}) is None
    assert server_wait_s(None) is None


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999999])
def test_backoff_never_waits_less_than_retry_after(rand: float) -> None:
    b = Backoff(base_s=0.05, cap_s=5.0, server_jitter=0.2)
    d = b.delay(1, {"Retry-After": "3"}, rand=lambda: rand)
    assert 3.0 <= d <= 3.6
    # even beyond the cap: the server's word wins
    assert b.delay(1, {"Retry-After": "60"}, rand=lambda: rand) >= 60


def test_backoff_full_jitter_is_bounded_by_the_exponential_and_the_cap() -> None:
    b = Backoff(base_s=0.1, cap_s=1.0)
    assert b.delay(1, rand=lambda: 0.999999) <= 0.1
    assert b.delay(3, rand=lambda: 0.999999) <= 0.4
    assert b.delay(3, rand=lambda: 0.999999) > 0.39
    assert b.delay(50, rand=lambda: 0.999999) <= 1.0
    assert b.delay(50, rand=lambda: 0.0) == 0.0


def test_pause_after_a_success_that_spent_the_last_token() -> None:
    assert pause_after_success({"ratelimit-remaining": "0", "ratelimit-reset": "0.5"}) == 0.5
    assert pause_after_success({"ratelimit-remaining": "3", "ratelimit-reset": "0.5"}) == 0.0
    assert pause_after_success({}) == 0.0


def test_rejected_indexes() -> None:
    body = {
        "error": "invalid_request",
        "details": [
            {"index": 1, "field": "type", "message": "required"},
            {"index": 1, "field": "occurred_at", "message": "bad"},
            {"index": 3, "field": None, "message": "not an object"},
        ],
    }
    assert rejected_indexes(4, body) == {1: "type: required; occurred_at: bad", 3: "not an object"}
    # not attributable to single events: the whole batch is rejected
    assert rejected_indexes(4, {"details": [{"index": None, "message": "bad JSON"}]}) is None
    assert rejected_indexes(4, {"details": [{"index": 4, "message": "x"}]}) is None
    assert rejected_indexes(4, {"details": []}) is None
    assert rejected_indexes(4, "oops") is None
