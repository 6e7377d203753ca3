from __future__ import annotations

from opsmantik.gateway.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_opens_on_failure_and_probes_once_after_cooldown() -> None:
    clock = Clock()
    b = Breaker(cooldown_s=1.0, clock=clock)
    seen: list[str] = []
    b.on_change(seen.append)
    assert b.allow_kafka()
    b.failure("deadline")
    assert b.state == OPEN and not b.allow_kafka()
    clock.t = 0.99
    assert not b.allow_kafka()
    clock.t = 1.0
    assert b.allow_kafka() and b.state == HALF_OPEN  # the probe
    assert not b.allow_kafka()  # only one probe at a time
    b.failure("still down")
    assert b.state == OPEN and not b.allow_kafka()
    clock.t = 2.5
    assert b.allow_kafka()
    b.success()
    assert b.state == CLOSED and b.allow_kafka()
    assert seen == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]
    assert b.trips == 2 and b.last_reason == "still down"


def test_failures_while_open_extend_the_cooldown() -> None:
    clock = Clock()
    b = Breaker(cooldown_s=1.0, clock=clock)
    b.failure("a")
    clock.t = 0.8
    b.failure("b")
    clock.t = 1.2
    assert not b.allow_kafka()
    clock.t = 1.8
    assert b.allow_kafka()
