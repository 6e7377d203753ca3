"""An independent fuzzer against the live gateway: Schemathesis with every check on, generating
from schemas/openapi.yaml (the contract), must find nothing. Two bounded runs: a fixed seed (the
same cases every time) and a random one (new cases every time; printed, with the command that
replays it). The gateway serves on an ephemeral port over real Kafka and Postgres.

Every operation is reached past its door: each gets the credential its `security` names
(schemathesis.toml's [auth.openapi.*]: a site key, an operator token, a portal token, minted
here), and an operation that only ever answered 401/403 or only 404 fails the run
(warnings.fail-on). Time: both runs share BUDGET_S; at 24 operations, 100 examples per operation
took 60-84 s a run on a loaded machine, and 50 took 45-67 s (112 s for both at load 4.3), so
MAX_EXAMPLES is 30: ~1,970 cases and 30-31 s a run, 64 s for both at
load 4.4. A run the deadline cuts short fails the test (never a pass that tested less), as does
one that generated fewer than 50 cases per operation; each run prints its cases and time."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from opsmantik import portal
from opsmantik.config import Settings
from opsmantik.gateway.app import create_app
from opsmantik.sites import create_site_with_key
from opsmantik.tokens import create_token

from tests.unit.test_openapi import documented

ROOT = Path(__file__).resolve().parents[2]
ST = shutil.which("st", path=str(Path(sys.executable).parent))
FIXED_SEED = 15
MAX_EXAMPLES = 30  # per operation and phase: ~1,970 requests a run (24 operations)
# Both runs share one deadline, a hang guard rather than a speed check: ~31 s a run at load 4.4
# (the docstring), but make test runs three lanes at once (scripts/test.sh), and beside them and a
# benchmark (load 11) both runs overran 115 s.
BUDGET_S = 300.0
_deadline: list[float] = []


@dataclass(frozen=True)
class Live:
    """The gateway under test and the credentials and data schemathesis.toml and st_hooks.py read."""

    url: str
    database_url: str
    key_secret: str
    site_id: uuid.UUID
    env: dict[str, str]  # ST_OPSMANTIK_*: the site key, operator and portal tokens, an event


@pytest.fixture(scope="module")
async def live(settings: Settings) -> AsyncIterator[Live]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        # Limits far above what the fuzzer sends: a 429 is documented, but would hide the cases
        # behind it. Quota and cap stay unset for the same reason.
        key = await create_site_with_key(
            conn, "schemathesis", rate=1e6, burst=1_000_000, secret=settings.key_secret
        )
        operator = await create_token(conn, "schemathesis", secret=settings.key_secret)
        dashboard = await portal.mint(
            conn, key.site_id, timedelta(hours=1), "schemathesis", secret=settings.key_secret
        )
        # A dead letter of the site (what the worker writes for a message it cannot ledger), so
        # GET /api/v1/events lists one and the lookup of its id answers 200, not only 404.
        event_id = f"st-dead-{secrets.token_hex(4)}"
        await conn.execute(
            "INSERT INTO ingest_dead_letter (topic, kafka_partition, kafka_offset, site_id, event_id,"
            " reason, payload) VALUES ('schemathesis', 0, $1, $2, $3, 'schemathesis fixture', '')",
            secrets.randbelow(2**62),
            str(key.site_id),
            event_id,
        )
    finally:
        await conn.close()
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # ephemeral port
    await site.start()
    port = runner.addresses[0][1]
    env = {
        "ST_OPSMANTIK_SITE_KEY": key.api_key,
        "ST_OPSMANTIK_OPERATOR_TOKEN": operator.token,
        "ST_OPSMANTIK_PORTAL_TOKEN": dashboard.token,
        "ST_OPSMANTIK_SITE_ID": str(key.site_id),
        "ST_OPSMANTIK_EVENT_ID": event_id,
    }
    yield Live(f"http://127.0.0.1:{port}", settings.database_url, settings.key_secret, key.site_id, env)
    await runner.cleanup()


async def revocable_token(live: Live) -> str:
    """A portal token of the site for this run's DELETE /api/v1/portal/tokens/{token_id} to revoke."""
    conn = await asyncpg.connect(live.database_url)
    try:
        new = await portal.mint(
            conn, live.site_id, timedelta(hours=1), "schemathesis", secret=live.key_secret
        )
    finally:
        await conn.close()
    return str(new.claims.token_id)


async def run_schemathesis(live: Live, seed: int) -> tuple[int, str]:
    assert ST, "schemathesis not installed: make deps (pyproject.toml dev extras)"
    cmd = [
        ST,
        "run",
        "schemas/openapi.yaml",
        "--url",
        live.url,
        "--checks",
        "all",
        "--seed",
        str(seed),
        "--max-examples",
        str(MAX_EXAMPLES),
    ]
    env = {**os.environ, **live.env, "ST_OPSMANTIK_REVOCABLE_TOKEN_ID": await revocable_token(live)}
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    if not _deadline:
        _deadline.append(time.monotonic() + BUDGET_S)
    remaining = max(1.0, _deadline[0] - time.monotonic())
    started = time.monotonic()
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), remaining)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"schemathesis did not finish within the {BUDGET_S:.0f} s both runs share"
    took = time.monotonic() - started
    return proc.returncode or 0, f"{out.decode(errors='replace')}\n(run took {took:.1f} s)"


def _explain(seed: int, code: int, out: str) -> str:
    replay = (
        f"st run schemas/openapi.yaml --url <gateway> --checks all --seed {seed} "
        f"--max-examples {MAX_EXAMPLES} (with the ST_OPSMANTIK_* credentials schemathesis.toml names)"
    )
    # Long lines (a reproducing curl can be 10 kB) cut, so the failures fit beside the summary.
    lines = [line if len(line) <= 600 else line[:600] + " [...]" for line in out.splitlines()]
    return f"schemathesis seed {seed} exited {code}; replay: {replay}\n" + "\n".join(lines)[-12000:]


RANDOM_SEED = secrets.randbelow(2**31)


# The seeds are in the test ids, so `pytest -v` and every failure print them.
@pytest.mark.parametrize(
    "seed", [FIXED_SEED, RANDOM_SEED], ids=[f"fixed-seed-{FIXED_SEED}", f"random-seed-{RANDOM_SEED}"]
)
async def test_schemathesis_finds_nothing(live: Live, seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():  # shown on every run, passing or not
        print(f"\nschemathesis seed {seed} ({'fixed' if seed == FIXED_SEED else 'random'})")
    code, out = await run_schemathesis(live, seed)
    with capsys.disabled():
        generated_line = re.search(r"\d+ generated.*", out)
        took = re.search(r"\(run took [\d.]+ s\)", out)
        print(f"  {generated_line[0] if generated_line else '?'} {took[0] if took else ''}")
    assert code == 0, _explain(seed, code, out)
    assert "No issues found" in out, _explain(seed, code, out)
    # Every documented operation was exercised (a schema the fuzzer half-loads tests less).
    n = len(documented())
    assert f"{n} selected / {n} total" in out and f"Tested: {n}" in out, _explain(seed, code, out)
    # ... with enough cases that "no issues" means something (a hook that filtered every case
    # out would also report none).
    generated = re.search(r"(\d+) generated", out)
    assert generated and int(generated[1]) >= 50 * n, _explain(seed, code, out)
