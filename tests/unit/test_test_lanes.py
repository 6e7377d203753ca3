"""make test's lanes (scripts/test.sh, tests/support/lanes.py): a test module that starts a private
stack is marked `own_stack`, and no other is. A private-stack module left unmarked would run in the shared
lane (only slower); a shared-stack module marked by mistake would run beside the shared lane's
workers on the same topics and groups, so both directions are checked."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.lanes import BESIDE_OTHER, lane_of
from tests.support.process import ROOT

STARTS_A_STACK = re.compile(r"\b(new_stack|stack_fixture|private_stack|ChaosStack)\(")
MARKED = re.compile(r"pytest\.mark\.own_stack\b")
ROOTS = [ROOT / "tests", ROOT / "clients" / "python" / "tests"]


def modules() -> list[Path]:
    return sorted(p for r in ROOTS for p in r.rglob("test_*.py") if "unit" not in p.relative_to(ROOT).parts)


def test_every_private_stack_module_is_in_the_own_stack_lane_and_only_those() -> None:
    found = modules()
    assert len(found) > 40, found  # the walk found the suites
    starts = {p for p in found if STARTS_A_STACK.search(p.read_text())}
    marked = {p for p in found if MARKED.search(p.read_text())}
    assert len(starts) >= 8, starts
    assert starts - marked == set(), "start a private stack but are not marked own_stack"
    assert marked - starts == set(), "marked own_stack but start no private stack"


def test_each_test_has_one_lane_by_marker_and_path() -> None:
    unit, integration = ROOT / "tests/unit/test_alerts.py", ROOT / "tests/integration/test_worker.py"
    assert lane_of(unit, set()) == "main"
    assert lane_of(integration, {"integration"}) == "main"
    assert lane_of(ROOT / "tests/integration/test_alerts.py", set()) == "other"
    assert lane_of(ROOT / "clients/python/tests/test_client.py", set()) == "other"
    assert lane_of(ROOT / "tests/chaos/test_chaos_ci.py", {"own_stack"}) == "own-stack"
    assert lane_of(integration, {"own_stack", "alone"}) == "alone"
    for name in BESIDE_OTHER:  # private stacks moved beside the other lane exist and are own_stack
        module = ROOT / "tests/integration" / name
        assert MARKED.search(module.read_text()), module
        assert lane_of(module, {"own_stack"}) == "other"
