"""The CI form of the fault-injection suite: scenarios 1, 4, 5, 6 once each against a private
stack (free ports) with real gateway, worker and relay processes. Fails on any loss, invented
or duplicated event, drift, leftover outbox row or stray 5xx. Run by `make chaos`."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator

import pytest

from tests.chaos import report
from tests.chaos.harness import CHAOS_HOME, ChaosStack
from tests.chaos.scenarios import CI_SUBSET, SCENARIOS, Profile, RunResult, run_scenario

SEED = int(os.environ.get("OPSMANTIK_CHAOS_SEED") or random.randrange(1, 100_000))
RESULTS: list[RunResult] = []
pytestmark = pytest.mark.own_stack  # a private stack: make test's own-stack lane (scripts/test.sh)


@pytest.fixture(scope="module")
async def engines() -> AsyncIterator[ChaosStack]:
    stack = ChaosStack()
    await asyncio.to_thread(stack.up)
    yield stack
    print(
        f"\nchaos CI subset, seed {SEED} (OPSMANTIK_CHAOS_SEED={SEED} to rerun)\n" + report.markdown(RESULTS),
        file=sys.stderr,
    )
    await asyncio.to_thread(stack.down)


@pytest.mark.parametrize("number", CI_SUBSET)
async def test_nothing_lost(engines: ChaosStack, number: int) -> None:
    result = await run_scenario(engines, SCENARIOS[number], SEED, Profile(), CHAOS_HOME / "runs")
    RESULTS.append(result)
    assert result.passed, f"scenario {number} seed {SEED}: " + "; ".join(result.failures)
    assert result.verdict is not None and result.verdict.acked > 0
