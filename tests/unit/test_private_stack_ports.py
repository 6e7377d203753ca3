"""A private stack's ports (tests/support/stacks.py): every port its Stack derives from the Kafka
port (the controller's, a cluster's brokers and quorum) is free when it is chosen, and Postgres
is outside that block."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support import process, stacks


def _ports(stack: stacks.Stack) -> list[int]:
    return [p for n in stack.nodes() for p in (n.port, n.controller_port)]


@pytest.fixture
def taken() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", process.free_port_block([0])))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("brokers", [1, 3])
def test_a_base_whose_derived_port_is_taken_is_skipped(
    brokers: int, taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first candidate base puts the last derived port (the last controller's) on the taken one.
    last = max(stacks.kafka_offsets(brokers))
    candidates = iter([taken - last, taken + 1000, taken + 2000, taken + 3000])
    monkeypatch.setattr(process.random, "randrange", lambda _lo, _hi: next(candidates))
    stack = stacks.new_stack("ports", brokers)
    try:
        assert taken not in _ports(stack)
        assert stack.kafka_port != taken - last
        assert len(set(_ports(stack))) == 2 * brokers
        assert stack.pg_port not in _ports(stack)
    finally:
        stacks.remove(stack)


def test_stable_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = process.stable_ports(5)
    assert len(set(ports)) == 5
    assert all(process.BLOCK_LOW <= p < process.BLOCK_HIGH for p in ports)
