"""Debian's promtool (the prometheus package, installed by scripts/ensure-observability.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "opsmantik.rules.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.test.yml"))
TIMEOUT_S = 300.0  # a hang guard, not a speed check: the rule tests take 14 s quiet, over 60 at load 11


def binary(name: str = "promtool") -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: run `bash scripts/ensure-observability.sh` (make deps does)")
    return path


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary(), *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
