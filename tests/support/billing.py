"""Helpers of the billing integration tests: CLI runs, the pipeline (gateway and worker as processes),
exports fetched over HTTP, and the agreement check (invoice = export = reconcile = statement)."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import orjson
from opsmantik.config import Settings
from opsmantik.months import label, month_start, previous_month

from tests.support.pipeline import OPSMANTIK, env_for, pipeline_fixture

# The gateway's settings of the billing modules: usage read fresh, and export limits small enough
# to reach (1 per site, 2 in total).
GATEWAY_ENV = {"usage_refresh_s": 0.2, "export_max_per_site": 1, "export_max_total": 2}
CLI_ENV = {"billing_close_grace_days": 0, "sla_loss_audit": "off"}


def current_month() -> date:
    return datetime.now(UTC).date().replace(day=1)


def late_instant() -> datetime:
    """An instant in the previous month the gateway still accepts (< 35 days old)."""
    return month_start(current_month()) - timedelta(minutes=30)


def prev(n: int = 1) -> date:
    m = current_month()
    for _ in range(n):
        m = previous_month(m)
    return m


def cli(settings: Settings, *args: str, **env: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPSMANTIK, *args],
        env=env_for(settings, **{**CLI_ENV, **env}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


pipeline = pipeline_fixture(**GATEWAY_ENV)  # the whole pipeline, on the module's environment


async def send(base: str, key: str, events: list[dict[str, object]]) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{base}/api/sync", json={"events": events}, headers=auth(key)) as r,
    ):
        return r.status, await r.json()


def event(event_id: str, at: datetime | None = None, quantity: int = 1) -> dict[str, object]:
    return {
        "event_id": event_id,
        "type": "api_call",
        "quantity": quantity,
        "occurred_at": (at or datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        "properties": {"path": "/x", "note": "é"},
    }


async def fetch_export(base: str, key: str, month: date, path: Path, fmt: str = "ndjson") -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{base}/api/billing/dispute-export",
            params={"month": label(month), "format": fmt},
            headers=auth(key),
        ) as r,
    ):
        assert r.status == 200, await r.text()
        with path.open("wb") as f:
            async for chunk in r.content.iter_chunked(1 << 16):
                f.write(chunk)
    return path.stat().st_size


async def usage(base: str, key: str, month: date) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{base}/api/usage", params={"month": label(month)}, headers=auth(key)) as r,
    ):
        assert r.status == 200
        return await r.json()


def summary_of(path: Path) -> dict[str, object]:
    with path.open("rb") as f:
        last = f.readlines()[-1]
    return orjson.loads(last)


async def agree(
    settings: Settings,
    pool: asyncpg.Pool,
    base: str,
    site: uuid.UUID,
    key: str,
    month: date,
    tmp: Path,
) -> dict[str, object]:
    """Invoice (HTTP) = export summary (verified offline) = reconcile (0 drift) = statement (if
    the month is closed). Returns the export's summary."""
    inv = await usage(base, key, month)
    path = tmp / f"{site}-{label(month)}.ndjson"
    await fetch_export(base, key, month, path)
    done = cli(settings, "billing", "verify", str(path), "--json")
    assert done.returncode == 0, done.stdout
    s = summary_of(path)
    totals = s["totals"]
    for k in ("events", "quantity", "overlimit_events", "overlimit_quantity"):
        assert inv[k] == totals[k] == s["invoice"][k], (k, inv, totals)
    rec = cli(settings, "reconcile", "--month", label(month), "--json")
    assert rec.returncode == 0, rec.stdout
    assert all(x["ok"] for x in orjson.loads(rec.stdout)["sites"])
    stmt = await pool.fetchrow(
        "SELECT * FROM billing_statements WHERE site_id = $1 AND month = $2", site, month
    )
    closed = await pool.fetchval("SELECT count(*) FROM closed_months WHERE month = $1", month)
    if closed and stmt is None:  # the site had nothing in the month when it closed
        assert s["statement"] is None and totals["rows"] == totals["voids"] == 0
    elif closed:
        assert s["statement"]["sha256"] == stmt["sha256"] == s["sha256"]
        assert (stmt["events"], stmt["quantity"]) == (totals["events"], totals["quantity"])
    else:
        assert stmt is None and s["statement"] is None
    return s
