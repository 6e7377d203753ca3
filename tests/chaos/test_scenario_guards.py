"""Scenario 5 can fail: the relay-kill fault refuses to count as injected when the outbox never
filled, the relay never started draining, or it drained everything before the kill (before, each
of these passed as a "relay killed while draining" run). Stand-ins for the engines and the
relay: only the fault's own logic runs."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.chaos.harness import HarnessError
from tests.chaos.scenarios import FaultContext, Profile, relay_kill


@dataclass
class Relay:
    events: list[str]
    kind: str = "relay"
    env: dict[str, str] = field(default_factory=dict)
    batches: list[str | None] = field(default_factory=list)  # OPSMANTIK_RELAY_BATCH at each start

    def kill(self) -> None:
        self.events.append("kill")

    def start(self) -> None:
        self.events.append("start")
        self.batches.append(self.env.get("OPSMANTIK_RELAY_BATCH"))


@dataclass
class Engines:
    def kill_kafka(self) -> None: ...

    def start_kafka(self) -> None: ...


@dataclass
class Pipeline:
    relays: list[Relay] = field(default_factory=list)


class Context(FaultContext):
    """The real fault context with scripted outbox depths and no waiting."""

    def __init__(self, depths: list[int], events: list[str]) -> None:
        super().__init__(
            Engines(),
            Pipeline([Relay(events)]),
            "site",
            random.Random(1),  # type: ignore[arg-type]
            Profile(fault_s=0),
        )
        self._depths: Iterator[int] = iter(depths)
        self._last = depths[-1]

    async def sleep(self, seconds: float) -> None:
        return None

    async def outbox_depth(self) -> int:
        self._last = next(self._depths, self._last)
        return self._last


async def test_a_kill_while_draining_passes() -> None:
    events: list[str] = []
    ctx = Context([4000, 4000, 3000, 3000], events)
    await relay_kill(ctx)
    assert events == ["kill", "start", "kill", "start"]
    assert ctx.notes == ["outbox before relay start: 4000", "outbox when relay killed: 3000"]
    # the restart the kill interrupts drains in small rounds; the one after, at the default
    assert ctx.pipeline.relays[0].batches == ["25", None]


@pytest.mark.parametrize(
    ("depths", "why"),
    [
        ([0], "did not fill"),
        ([-1], "did not fill"),  # the database could not be read
        ([4000, 0], "before the kill"),
    ],
)
async def test_a_fault_that_was_not_injected_fails(depths: list[int], why: str) -> None:
    with pytest.raises(HarnessError, match=why):
        await relay_kill(Context(depths, []))


async def test_a_relay_that_never_drains_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr("tests.chaos.scenarios.time.monotonic", lambda: float(next(clock)))
    with pytest.raises(HarnessError, match="did not start draining"):
        await relay_kill(Context([4000], []))
