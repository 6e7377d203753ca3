"""Month close, late events, voids and the verifiable export through the real gateway (HTTP), the
real worker (Kafka → Postgres) and the CLI, on the module's own database and topics.

The tests run in file order on one database: the previous month P is open in the first test and
closed from the second on (the close is idempotent, so each test closes it itself)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.months import label, month_start
from opsmantik.worker.ledger import write_batch
from opsmantik.worker.message import decode

from tests.support.billing import (
    agree,
    cli,
    current_month,
    event,
    late_instant,
    pipeline,
    prev,
    send,
    usage,
)
from tests.support.environment import module_environment
from tests.support.pipeline import OPSMANTIK, Pipeline, env_for, ledgered, message, wait_for

pytestmark = pytest.mark.integration
settings, pool = module_environment()
__all__ = ["pipeline"]  # the module fixture


async def new_site(pool: asyncpg.Pool, **limits: object) -> sites.NewKey:
    async with pool.acquire() as conn:
        return await sites.create_site_with_key(conn, f"b-{uuid.uuid4().hex[:8]}", **limits)


async def ledger_row(pool: asyncpg.Pool, site: uuid.UUID, event_id: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT * FROM ingest_idempotency WHERE site_id = $1 AND event_id = $2", site, event_id
    )


def close_p(settings: Settings) -> dict[str, object]:
    done = cli(settings, "billing", "close", "--month", label(prev()), "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    return orjson.loads(done.stdout)


async def test_void_in_an_open_month(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    p = prev()
    k = await new_site(pool)
    status, _ = await send(
        pipeline.url, k.api_key, [event(f"o{i}", late_instant(), quantity=i + 1) for i in range(3)]
    )
    assert status == 200
    await wait_for(ledgered(pool, k.site_id, 3), 30, what="3 ledger rows")
    assert (await usage(pipeline.url, k.api_key, p))["quantity"] == 6

    done = cli(settings, "events", "void", str(k.site_id), "o1", "--reason", "sent twice by mistake")
    assert done.returncode == 0 and "off the " + label(p) in done.stdout, done.stderr
    s = await agree(settings, pool, pipeline.url, k.site_id, k.api_key, p, tmp_path)
    t = s["totals"]
    assert (t["rows"], t["voids"], t["events"], t["quantity"]) == (3, 1, 2, 4)
    void = await pool.fetchrow("SELECT * FROM billing_voids WHERE site_id = $1", k.site_id)
    assert (void["billed_month"], void["booked_month"], void["reason"]) == (p, p, "sent twice by mistake")

    again = cli(settings, "events", "void", str(k.site_id), "o1", "--reason", "again")
    assert again.returncode == 1 and "already voided" in again.stderr
    unknown = cli(settings, "events", "void", str(k.site_id), "nope", "--reason", "x")
    assert unknown.returncode == 1 and "no such event" in unknown.stderr
    # Voided, then re-sent with the same event_id: a duplicate, not billed again.
    # A fresh event in the same request (same site → same partition, after it) tells when the
    # worker has passed the re-sent one.
    status, body = await send(
        pipeline.url, k.api_key, [event("o1", late_instant(), quantity=2), event("o-marker")]
    )
    assert status == 200
    await wait_for(ledgered(pool, k.site_id, 4), 30, what="the marker event")
    assert (await usage(pipeline.url, k.api_key, p))["quantity"] == 4

    result = close_p(settings)
    stmt = next(x for x in result["statements"] if x["site_id"] == str(k.site_id))
    assert (stmt["ledger_rows"], stmt["voids"], stmt["events"], stmt["quantity"]) == (3, 1, 2, 4)
    await agree(settings, pool, pipeline.url, k.site_id, k.api_key, p, tmp_path)
    assert close_p(settings)["statements"] == result["statements"]  # idempotent


async def test_late_event_for_a_closed_month(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    p, c = prev(), current_month()
    close_p(settings)
    k = await new_site(pool)
    status, body = await send(
        pipeline.url, k.api_key, [event("late-1", late_instant(), quantity=7), event("now-1")]
    )
    assert status == 200, body
    await wait_for(ledgered(pool, k.site_id, 2), 30, what="2 ledger rows")
    row = await ledger_row(pool, k.site_id, "late-1")
    assert (row["usage_month"], row["billing_month"]) == (p, c)  # captured, booked in the open month
    s = await agree(settings, pool, pipeline.url, k.site_id, k.api_key, c, tmp_path)
    assert (s["totals"]["rows"], s["totals"]["late_rows"], s["totals"]["quantity"]) == (2, 1, 8)
    lines = [orjson.loads(x) for x in (tmp_path / f"{k.site_id}-{label(c)}.ndjson").read_bytes().splitlines()]
    late = next(x for x in lines if x.get("event_id") == "late-1")
    assert late["late"] is True and late["usage_month"] == label(p) and late["billing_month"] == label(c)
    assert (await usage(pipeline.url, k.api_key, p))["events"] == 0  # the closed month's invoice did not move
    await agree(settings, pool, pipeline.url, k.site_id, k.api_key, p, tmp_path)

    # The hard cap counts the late event in the month it is booked into (the open one).
    capped = await new_site(pool, hard_cap=1)
    assert (await send(pipeline.url, capped.api_key, [event("c-1")]))[0] == 200
    await wait_for(ledgered(pool, capped.site_id, 1), 30, what="capped site's row")

    async def refused() -> bool:
        status, body = await send(
            pipeline.url, capped.api_key, [event(f"c-late-{uuid.uuid4().hex[:6]}", late_instant())]
        )
        return status == 429 and body["error"] == "quota_exceeded" and label(c) in body["message"]

    await wait_for(refused, 10, 0.3, "429 quota_exceeded for a late event")


async def test_void_in_a_closed_month(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    p, c = prev(), current_month()
    k = await new_site(pool)
    # Ledgered in P before P closes (in a fresh run of this test alone, P is still open here).
    async with pool.acquire() as conn:
        closed = await conn.fetchval("SELECT count(*) FROM closed_months WHERE month = $1", p)
        if closed:  # P closed by an earlier test: put the row in P as it was before the close
            await conn.execute("DELETE FROM closed_months WHERE month = $1", p)
        evs = [
            decode(message(k.site_id, f"v{i}", quantity=10, occurred_at=late_instant()), 0, i)
            for i in range(2)
        ]
        await write_batch(conn, "test", "test:1", evs, [])  # type: ignore[arg-type]
        if closed:
            await conn.execute("INSERT INTO closed_months (month) VALUES ($1)", p)
    result = close_p(settings)
    before = next(x for x in result["statements"] if x["site_id"] == str(k.site_id))
    assert (before["events"], before["quantity"]) == (2, 20)

    done = cli(settings, "events", "void", str(k.site_id), "v0", "--reason", "test traffic", "--json")
    assert done.returncode == 0, done.stderr
    v = orjson.loads(done.stdout)["voided"][0]
    assert (v["billed_month"], v["booked_month"], v["adjustment"]) == (label(p), label(c), True)
    sc = await agree(
        settings, pool, pipeline.url, k.site_id, k.api_key, c, tmp_path
    )  # the negative adjustment
    assert (
        sc["totals"]["voids"],
        sc["totals"]["adjustments"],
        sc["totals"]["events"],
        sc["totals"]["quantity"],
    ) == (1, 1, -1, -10)
    sp = await agree(
        settings, pool, pipeline.url, k.site_id, k.api_key, p, tmp_path
    )  # P and its statement unchanged
    assert sp["sha256"] == before["sha256"] and sp["totals"]["events"] == 2
    # A list from a file: all or nothing.
    ids = tmp_path / "ids.txt"
    ids.write_text("v1\nv0\n")
    done = cli(settings, "events", "void", str(k.site_id), "--file", str(ids), "--reason", "bulk")
    assert done.returncode == 1 and "v0: already voided" in done.stderr
    assert await pool.fetchval("SELECT count(*) FROM billing_voids WHERE site_id = $1", k.site_id) == 1
    ids.write_text("v1\n")
    done = cli(settings, "events", "void", str(k.site_id), "--file", str(ids), "--reason", "bulk")
    assert done.returncode == 0, done.stderr
    sc = await agree(settings, pool, pipeline.url, k.site_id, k.api_key, c, tmp_path)
    assert (sc["totals"]["events"], sc["totals"]["quantity"]) == (-2, -20)


async def test_a_close_racing_a_batch_never_books_into_the_closed_month(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A worker batch (the worker's own write_batch) is held open across the close: the close
    waits for it, its row is in the statement, and the next batch books into the open month."""
    m = prev(2)
    k = await new_site(pool)
    held = await asyncpg.connect(settings.database_url)
    outer = held.transaction()
    await outer.start()
    first = decode(message(k.site_id, "r1", occurred_at=_in(m)), 0, 1)
    await write_batch(held, "test", "test:1", [first], [])  # type: ignore[list-item]
    close = await asyncio.create_subprocess_exec(
        OPSMANTIK,
        "billing",
        "close",
        "--month",
        label(m),
        "--json",
        env=env_for(settings, billing_close_grace_days=0),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def close_waits() -> bool:
        return (
            await pool.fetchval(  # the close lock's key, in this database, waited for
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND mode = "
                "'ExclusiveLock' AND objid = 5124400005 % 4294967296 AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            > 0
        )

    async def waits_or_ended() -> bool:
        return close.returncode is not None or await close_waits()

    await wait_for(waits_or_ended, 30, 0.05, "the close to wait on the batch's lock (or end)")
    assert close.returncode is None, "the close did not wait for the in-flight batch"
    await outer.commit()  # the batch ends; only now may the close go on
    await held.close()
    out, err = await asyncio.wait_for(close.communicate(), 60)
    assert close.returncode == 0, err
    stmt = next(x for x in orjson.loads(out)["statements"] if x["site_id"] == str(k.site_id))
    assert stmt["ledger_rows"] == 1
    async with pool.acquire() as conn:
        second = decode(message(k.site_id, "r2", occurred_at=_in(m)), 0, 2)
        await write_batch(conn, "test", "test:1", [second], [])  # type: ignore[list-item]
    row = await ledger_row(pool, k.site_id, "r2")
    assert row["usage_month"] == m and row["billing_month"] > m
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM ingest_idempotency WHERE site_id = $1 AND billing_month = $2", k.site_id, m
        )
        == 1
    )


def _in(month: object) -> object:
    from opsmantik.months import month_start

    return month_start(month)  # type: ignore[arg-type]


async def test_month_values_are_400_and_exit_2_everywhere(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline
) -> None:
    import aiohttp

    from tests.support.billing import auth

    k = await new_site(pool)
    async with aiohttp.ClientSession() as s:
        for bad in ("0000-01", "2026-13", "2026-1", "", "2026-01-01"):
            for route in ("/api/usage", "/api/billing/dispute-export"):
                async with s.get(
                    f"{pipeline.url}{route}", params={"month": bad}, headers=auth(k.api_key)
                ) as r:
                    assert r.status == 400, (route, bad, r.status)
    for args in (("billing", "close"), ("sla-report",), ("reconcile",), ("slo-report",)):
        done = cli(settings, *args, "--month", "0000-01")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
    # Postgres unreachable: exit 3, naming the command that starts it.
    down = dataclasses.replace(settings, database_url="postgresql://nobody@127.0.0.1:1/none")
    for args in (
        ("billing", "close", "--month", "2020-01"),
        ("sla-report", "--month", "2020-01"),
        ("events", "void", str(k.site_id), "e", "--reason", "r"),
    ):
        done = cli(down, *args)
        assert done.returncode == 3 and "opsmantik stack up" in done.stderr, (args, done.stderr)


async def test_close_refuses_a_statement_when_the_invoice_drifted(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    m = prev(4)
    k = await new_site(pool)
    async with pool.acquire() as conn:
        evs = [decode(message(k.site_id, f"d{i}", occurred_at=_in(m)), 0, i) for i in range(2)]
        await write_batch(conn, "test", "test:1", evs, [])  # type: ignore[arg-type]
    await pool.execute("UPDATE site_usage_monthly SET events = events + 1 WHERE site_id = $1", k.site_id)
    done = cli(settings, "billing", "close", "--month", label(m))
    assert done.returncode == 1 and f"DRIFT site {k.site_id}" in done.stdout, done.stdout
    assert await pool.fetchval("SELECT count(*) FROM billing_statements WHERE site_id = $1", k.site_id) == 0
    await pool.execute("UPDATE site_usage_monthly SET events = events - 1 WHERE site_id = $1", k.site_id)
    done = cli(settings, "billing", "close", "--month", label(m), "--json")  # completes the statements
    assert done.returncode == 0, done.stdout
    stated = orjson.loads(done.stdout)["statements"]
    assert [s["events"] for s in stated if s["site_id"] == str(k.site_id)] == [2]


async def test_a_void_of_an_archived_month_names_the_month(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The event's row left Postgres with its month (`opsmantik archive`): the void is refused,
    naming the archived month, not as an unknown event."""
    m = date(2024, 5, 1)  # long past the acceptance window, used by no other test here
    k = await new_site(pool)
    at = month_start(m) + timedelta(days=3)
    async with pool.acquire() as conn:
        ev = decode(message(k.site_id, "arch-1", occurred_at=at, received_at=at), 0, 1)
        await write_batch(conn, "test", "test:1", [ev], [])  # type: ignore[list-item]
    done = cli(settings, "billing", "close", "--month", label(m))
    assert done.returncode == 0, done.stderr + done.stdout
    done = cli(settings, "archive", "--month", label(m), "--to", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert await ledger_row(pool, k.site_id, "arch-1") is None

    done = cli(settings, "events", "void", str(k.site_id), "arch-1", "--reason", "x")
    assert done.returncode == 1 and "nothing was voided" in done.stderr, done.stderr
    assert f"arch-1: not in the ledger in Postgres; it may be in archived month {label(m)}" in done.stderr
    assert "voids of archived months are not supported" in done.stderr and "no such event" not in done.stderr
