"""The worker's and relay's /metrics + /healthz endpoint: port 0 is an ephemeral port that the
endpoint reports; -1 is off."""

from __future__ import annotations

import json
import urllib.request

import pytest
from opsmantik.cli import main as cli_main
from opsmantik.telemetry import metrics_http


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - a local test URL
        return r.status, r.read()


def test_port_0_binds_an_ephemeral_port_reported_on_healthz() -> None:
    a = metrics_http.serve("worker", "127.0.0.1", 0)
    b = metrics_http.serve("worker", "127.0.0.1", 0)  # a second one on the same host
    assert a is not None and b is not None
    try:
        assert a.port != 0 and b.port != 0 and a.port != b.port
        status, body = get(f"http://127.0.0.1:{a.port}/healthz")
        health = json.loads(body)
        assert status == 200 and health["metrics_port"] == a.port and health["service"] == "worker"
        status, body = get(f"http://127.0.0.1:{a.port}/metrics")
        assert status == 200 and b"# HELP" in body
    finally:
        a.close()
        b.close()


def test_minus_one_is_off() -> None:
    assert metrics_http.serve("relay", "127.0.0.1", -1) is None


def test_stack_brokers_out_of_range_is_a_usage_error() -> None:
    for bad in ("0", "10", "x"):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["stack", "up", "--brokers", bad])
        assert exit_.value.code == 2
