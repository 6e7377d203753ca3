"""An independent fuzzer against the live gateway: Schemathesis with every check on, generating
from schemas/openapi.yaml (the contract), must find nothing. Two bounded runs: a fixed
seed (the
same cases every time) and a random one (new cases every time; printed, with the command that
replays it). The gateway serves on an ephemeral port over real Kafka and Postgres."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from opsmantik.config import Settings
from opsmantik.gateway.app import create_app
from opsmantik.sites import create_site_with_key

from tests.unit.test_openapi import documented

ROOT = Path(__file__).resolve().parents[2]
ST = shutil.which("st", path=str(Path(sys.executable).parent))
FIXED_SEED = 15
MAX_EXAMPLES = 100  # per operation and phase: ~1,300 requests a run (nine operations)
# Both runs share one deadline, the 2 min this file may add to `make test` (less the gateway's
# start): ~23 s a run on a quiet machine, ~43 s at load 4, so a busy machine has room before the
# bound cuts a run short.
BUDGET_S = 115.0
_deadline: list[float] = []


@pytest.fixture(scope="module")
async def live(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        # Limits far above what the fuzzer sends: a 429 is documented, but would hide the cases
        # behind it. Quota and cap stay unset for the same reason.
        key = await create_site_with_key(conn, "schemathesis", rate=1e6, burst=1_000_000)
    finally:
        await conn.close()
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # ephemeral port
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", key.api_key
    await runner.cleanup()


async def run_schemathesis(url: str, api_key: str, seed: int) -> tuple[int, str]:
    assert ST, "schemathesis not installed: make deps (pyproject.toml dev extras)"
    cmd = [
        ST,
        "run",
        "schemas/openapi.yaml",
        "--url",
        url,
        "--checks",
        "all",
        "--seed",
        str(seed),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--header",
        f"Authorization: Bearer {api_key}",
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    if not _deadline:
        _deadline.append(time.monotonic() + BUDGET_S)
    remaining = max(1.0, _deadline[0] - time.monotonic())
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), remaining)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"schemathesis did not finish within the {BUDGET_S:.0f} s both runs share"
    return proc.returncode or 0, out.decode(errors="replace")


def _explain(seed: int, code: int, out: str) -> str:
    replay = (
        f"st run schemas/openapi.yaml --url <gateway> --checks all --seed {seed} "
        f"--max-examples {MAX_EXAMPLES} -H 'Authorization: Bearer <key>'"
    )
    return f"schemathesis seed {seed} exited {code}; replay: {replay}\n{out[-6000:]}"


RANDOM_SEED = secrets.randbelow(2**31)


# The seeds are in the test ids, so `pytest -v` and every failure print them.
@pytest.mark.parametrize(
    "seed", [FIXED_SEED, RANDOM_SEED], ids=[f"fixed-seed-{FIXED_SEED}", f"random-seed-{RANDOM_SEED}"]
)
async def test_schemathesis_finds_nothing(
    live: tuple[str, str], seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():  # shown on every run, passing or not
        print(f"\nschemathesis seed {seed} ({'fixed' if seed == FIXED_SEED else 'random'})")
    code, out = await run_schemathesis(*live, seed)
    assert code == 0, _explain(seed, code, out)
    assert "No issues found" in out, _explain(seed, code, out)
    # Every documented operation was exercised (a schema the fuzzer half-loads tests less).
    n = len(documented())
    assert f"{n} selected / {n} total" in out and f"Tested: {n}" in out, _explain(seed, code, out)
    # ... with enough cases that "no issues" means something (a hook that filtered every case
    # out would also report none).
    generated = re.search(r"(\d+) generated", out)
    assert generated and int(generated[1]) >= 50 * n, _explain(seed, code, out)
