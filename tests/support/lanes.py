"""make test's lanes (scripts/test.sh runs `pytest --lane NAME` for each): three pytest sessions at
once, then one alone. Most of the time goes to waiting on processes and engines, so the suite
takes about its longest lane's time, not the sum.

- `own-stack`: tests that start a private Kafka + Postgres (marker `own_stack`: chaos subset,
  engine kills, database-loss drills);
- `main`: tests/unit and tests/integration but its test_a* modules;
- `other`: everything else (alerts, archive, audit, bench smoke, conformance, client, ...), plus
  the private-stack modules in BESIDE_OTHER: the other lane ends first (quiet run at 0c96e9a:
  own-stack 542 s, main 486 s, other 385 s);
- `alone` (marker `alone`), after the three: per-second rates that need a core's headroom.

The two shared-stack lanes meet on the local stack but nowhere else: each session makes a
database, topics and a worker group of its own (tests/support/environment.py)."""

from __future__ import annotations

from pathlib import Path

from tests.support.process import ROOT

LANES = ("own-stack", "main", "other", "alone")
# Private-stack modules run in the `other` lane, to even the lanes out (a run at d2644f9: own-stack
# 543 s, main 485 s, other 452 s with the key flood's 45 s; the lifecycle module is about 43 s).
BESIDE_OTHER = frozenset({"test_key_flood.py", "test_stack_lifecycle.py"})


def lane_of(path: Path, markers: set[str]) -> str:
    """The lane of a test in module `path` carrying `markers` (names)."""
    if "alone" in markers:
        return "alone"
    if "own_stack" in markers:
        return "other" if path.name in BESIDE_OTHER else "own-stack"
    parts = path.resolve().relative_to(ROOT).parts
    if parts[:2] == ("tests", "unit"):
        return "main"
    if parts[:2] == ("tests", "integration") and not path.name.startswith("test_a"):
        return "main"
    return "other"
