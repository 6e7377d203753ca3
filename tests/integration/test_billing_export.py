"""A month with 100,000 ledger rows for one site (seeded with SQL for speed): close (CLI),
export (HTTP, the gateway as a real process), verify (CLI) → match; one byte changed → mismatch
naming the row; the gateway's peak RSS growth while streaming it; the export limits (429)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import date
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.db.queries import load_queries
from opsmantik.months import label, month_start

from tests.support.billing import GATEWAY_ENV, auth, cli, fetch_export, prev
from tests.support.environment import module_environment
from tests.support.pipeline import Pipeline, pipeline_fixture, wait_for

pytestmark = pytest.mark.integration
settings, pool = module_environment()
# The gateway alone: the months are seeded with SQL, and its RSS is measured while it streams.
pipeline = pipeline_fixture("gateway", **GATEWAY_ENV)
ROWS = 100_000
Q = load_queries(Path(__file__).with_name("billing_seed.sql"))


async def seeded_site(pool: asyncpg.Pool, month: date, rows: int) -> sites.NewKey:
    async with pool.acquire() as conn:
        key = await sites.create_site_with_key(conn, f"x-{uuid.uuid4().hex[:6]}")
        await conn.fetchval("SELECT ledger_ensure_partition($1)", month)  # a past month (0009)
        await conn.execute(Q["seed_rows"], key.site_id, month_start(month), month, rows)
        await conn.execute(Q["seed_invoice"], key.site_id, month)
    return key


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)  # the sampling period (a measurement, not a wait)


@pytest.fixture(scope="module")
async def big(pool: asyncpg.Pool) -> tuple[sites.NewKey, date]:
    month = prev(3)
    return await seeded_site(pool, month, ROWS), month


@pytest.fixture(scope="module")
async def small(pool: asyncpg.Pool, big: tuple[sites.NewKey, date]) -> sites.NewKey:
    """50 rows in the same month, seeded before the close (so it has a statement too)."""
    return await seeded_site(pool, big[1], 50)


async def test_100k_rows_close_export_verify_and_one_changed_byte(
    settings: Settings,
    big: tuple[sites.NewKey, date],
    small: sites.NewKey,
    pipeline: Pipeline,
    tmp_path: Path,
) -> None:
    key, month = big
    t0 = time.monotonic()
    done = cli(settings, "billing", "close", "--month", label(month), "--json")
    close_s = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    statements = {s["site_id"]: s for s in orjson.loads(done.stdout)["statements"]}
    stmt = statements[str(key.site_id)]
    assert stmt["ledger_rows"] == stmt["events"] == ROWS

    # The CSV form of the small site's export verifies against its statement too. It also warms
    # the export path (pool, code): a big warm-up would leave its peak in the allocator's retained
    # memory and hide a buffered export from the measurement below.
    csv_path = tmp_path / "small.csv"
    await fetch_export(pipeline.url, small.api_key, month, csv_path, fmt="csv")
    done = cli(settings, "billing", "verify", str(csv_path), "--json")
    assert done.returncode == 0, done.stdout
    assert orjson.loads(done.stdout)["sha256"] == statements[str(small.site_id)]["sha256"]
    pid = pipeline.gateway.pid
    before = rss_kib(pid)
    sampler = RssSampler(pid)
    sampler.start()
    path = tmp_path / "export.ndjson"
    t0 = time.monotonic()
    size = await fetch_export(pipeline.url, key.api_key, month, path)
    export_s = time.monotonic() - t0
    sampler.done.set()
    sampler.join()
    growth_kib = sampler.peak - before
    print(
        f"\nexport: {ROWS} rows, {size / 1e6:.1f} MB in {export_s:.1f} s (close {close_s:.1f} s); gateway "
        f"RSS before {before / 1024:.1f} MiB, peak growth while streaming {growth_kib / 1024:.1f} MiB"
    )
    assert growth_kib * 1024 < size / 10, "the export is buffered, not streamed"

    t0 = time.monotonic()
    done = cli(settings, "billing", "verify", str(path))
    print(f"verify: {time.monotonic() - t0:.1f} s")
    assert done.returncode == 0 and "MATCH" in done.stdout and stmt["sha256"] in done.stdout, done.stdout
    # Change one byte of one row (a digit of row 54,321's quantity) → verify names that row.
    data = bytearray(path.read_bytes())
    start = data.index(b'"event_id":"ev-0054321"')
    at = data.index(b'"quantity":', start) + len(b'"quantity":')
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    changed = tmp_path / "changed.ndjson"
    changed.write_bytes(bytes(data))
    done = cli(settings, "billing", "verify", str(changed))
    assert done.returncode == 1, done.stdout
    assert "line 54321 (event_id 'ev-0054321'): content does not match its sha256" in done.stdout, done.stdout


async def test_exports_beyond_the_limits_are_429_with_retry_after(
    pool: asyncpg.Pool, big: tuple[sites.NewKey, date], pipeline: Pipeline
) -> None:
    """The gateway runs with 1 export per site and 2 in total (billing.GATEWAY_ENV)."""
    key, month = big
    other = await seeded_site(pool, month, 30_000)
    tiny = await seeded_site(pool, month, 3)
    url = f"{pipeline.url}/api/billing/dispute-export?month={label(month)}&format=ndjson"
    async with aiohttp.ClientSession() as s:
        held = await s.get(url, headers=auth(key.api_key))  # read slowly: holds its slot
        assert held.status == 200
        await held.content.readexactly(1 << 16)
        async with s.get(url, headers=auth(key.api_key)) as r:  # second for the site
            assert r.status == 429 and int(r.headers["Retry-After"]) > 0
            assert (await r.json())["error"] == "too_many_exports"
        held2 = await s.get(url, headers=auth(other.api_key))  # second in total: at the edge, allowed
        assert held2.status == 200
        await held2.content.readexactly(1 << 16)
        async with s.get(url, headers=auth(tiny.api_key)) as r:  # third in total
            assert r.status == 429 and "Retry-After" in r.headers
        async with s.get(f"{pipeline.url}/api/usage?month={label(month)}", headers=auth(tiny.api_key)) as r:
            assert r.status == 200  # the rest of the gateway still answers
        held.close()
        held2.close()

        async def slot_free() -> bool:  # once the gateway notices the closed downloads
            async with s.get(url, headers=auth(tiny.api_key)) as r:
                if r.status == 429:
                    return False
                assert r.status == 200
                assert orjson.loads((await r.read()).splitlines()[-1])["totals"]["rows"] == 3
                return True

        await wait_for(slot_free, 10, 0.05, "an export slot freed by the closed downloads")
