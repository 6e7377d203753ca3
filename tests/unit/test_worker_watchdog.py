"""Stall detection (services/opsmantik/worker/watchdog.py): time is passed in."""

from __future__ import annotations

from opsmantik.worker.watchdog import Progress, StallDetector


def test_progress_is_never_a_stall() -> None:
    d = StallDetector(10)
    assert not any(d.observe(t, Progress(committed=t, lag=100 + t)) for t in range(0, 60, 5))


def test_still_offset_with_growing_lag_is_a_stall_after_the_window() -> None:
    d = StallDetector(10)
    assert not d.observe(0, Progress(50, 5))
    assert not d.observe(5, Progress(50, 20))
    assert d.observe(10, Progress(50, 30))


def test_idle_consumer_with_no_new_messages_is_not_a_stall() -> None:
    d = StallDetector(10)
    assert not d.observe(0, Progress(50, 0))
    assert not d.observe(30, Progress(50, 0))


def test_still_offset_with_constant_lag_is_not_a_stall() -> None:
    d = StallDetector(10)
    d.observe(0, Progress(50, 7))
    assert not d.observe(30, Progress(50, 7))


def test_reset_starts_a_fresh_window() -> None:
    d = StallDetector(10)
    d.observe(0, Progress(50, 5))
    assert d.observe(12, Progress(50, 9))
    d.reset(12)
    assert not d.observe(13, Progress(50, 10))
