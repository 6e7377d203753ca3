"""Bugs the chaos suite found in components, pinned as small tests beside it (the components'
owners move them into their own tests when they fix them)."""

from __future__ import annotations

from pathlib import Path

from opsmantik.config import Settings
from opsmantik.worker.app import build_app


def test_worker_takes_over_quickly_after_a_sigkill(tmp_path: Path) -> None:
    """Scenario 4 (seed 21): a worker SIGKILLed and restarted at once consumed nothing for 58 s
    (log: restarted 23:05:22, "consuming" 23:06:20; drain 44 s), breaking the < 5 s freshness SLO.
    The dead member stays in the consumer group until its session times out, and the group cannot
    rebalance to the new one before that; Faust's default broker_session_timeout is 60 s."""
    app = build_app(Settings(), None, tmp_path)  # type: ignore[arg-type]
    assert app.conf.broker_session_timeout <= 10.0
