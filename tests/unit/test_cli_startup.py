"""The `opsmantik` command starts without loading what only some commands use: the test suite and
operators run it hundreds of times, and aiohttp (its TLS context), prometheus_client, pyarrow and
Faust once cost 0.3 s of every start. Commands that need them import them when they run."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("aiohttp", "prometheus_client", "pyarrow", "faust")
PROBE = f"""
import json, sys
from opsmantik.cli.main import build_parser
build_parser()
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""


def test_building_the_parser_loads_no_heavy_library() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_client_package_still_exports_every_name() -> None:
    import opsmantik_client

    for name in opsmantik_client.__all__:
        assert getattr(opsmantik_client, name).__name__ == name
    assert set(opsmantik_client.__all__) <= set(dir(opsmantik_client))
    assert opsmantik_client.sync.Client is opsmantik_client.Client  # a submodule, not imported first
