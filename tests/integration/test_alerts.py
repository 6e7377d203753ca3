"""Usage alerts through the deployed pipeline (docs/alerts.md): the real worker decides crossings in
the ledger's transaction, `opsmantik dispatcher` (a real process, development settings allowing
http and loopback) delivers them to a local aiohttp receiver, which verifies every webhook with the
official `standardwebhooks` package."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
import standardwebhooks
from aiohttp import web
from opsmantik import sites
from opsmantik.alerts import rules, urls
from opsmantik.billing.voids import void_events
from opsmantik.config import Settings
from opsmantik.meters import definitions
from opsmantik.meters.definitions import Meter

from tests.support import alert_oracle
from tests.support.pipeline import (
    OPSMANTIK,
    Pipeline,
    Process,
    env_for,
    free_port,
    ledgered,
    message,
    opsmantik_process,
    pipeline_fixture,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration
pipeline = pipeline_fixture("worker", "relay", worker_batch=7)  # small batches: crossings mid-stream
DEV = urls.UrlPolicy(allow_http=True, allow_private=True)
DISPATCHER_ENV = {
    "alerts_allow_http": 1,
    "alerts_allow_private": 1,
    "dispatcher_timeout_s": 1.0,
    "dispatcher_backoff_base_s": 0.2,
    "dispatcher_backoff_cap_s": 0.5,
    "dispatcher_concurrency": 4,
    "dispatcher_metrics_port": 0,
}


@dataclass
class Receiver:
    """Answers each path as told; keeps every verified webhook (id, body, answered status)."""

    port: int = 0
    secrets: dict[str, str] = field(default_factory=dict)  # path -> whsec_
    fail_first: dict[str, int] = field(default_factory=dict)  # path -> how many 500s before 200
    got: list[tuple[str, str, dict[str, Any], int]] = field(default_factory=list)  # path, id, doc, status
    bad_signatures: int = 0
    hits: Counter[str] = field(default_factory=Counter)  # requests per path, verified or not

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["name"]
        self.hits[path] += 1
        if path == "hang":
            await asyncio.sleep(3600)
        if path == "huge":
            resp = web.StreamResponse(status=500)
            await resp.prepare(request)
            for _ in range(64 * 1024):  # 1 GiB offered; the dispatcher reads 4 KiB
                await resp.write(b"x" * 16384)
            return resp
        if path == "redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/hook/ok")
        body = await request.read()
        try:
            doc = standardwebhooks.Webhook(self.secrets[path]).verify(body, dict(request.headers))
        except standardwebhooks.WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400)
        status = 500 if self.fail_first.get(path, 0) > 0 else 200
        if status == 500:
            self.fail_first[path] -= 1
        self.got.append((path, request.headers["webhook-id"], doc, status))
        return web.Response(status=status)

    def acknowledged(self, path: str) -> list[dict[str, Any]]:
        return [doc for p, _, doc, status in self.got if p == path and status == 200]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{path}"


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(port=free_port())
    app = web.Application()
    app.router.add_post("/hook/{name}", r.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", r.port).start()
    yield r
    await runner.cleanup()


@pytest.fixture(scope="module")
def dispatcher(pipeline: Pipeline) -> Iterator[Process]:
    proc = opsmantik_process(
        pipeline.settings, pipeline.log_dir, "dispatcher", "dispatcher", **DISPATCHER_ENV
    )
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.tail()


async def new_site(pool: asyncpg.Pool, quota: int | None = None, cap: int | None = None) -> uuid.UUID:
    async with pool.acquire() as conn:
        site = await sites.create_site(conn, f"a-{uuid.uuid4().hex[:8]}", monthly_quota=quota, hard_cap=cap)
        return site.site_id


async def add_rule(
    pool: asyncpg.Pool, settings: Settings, receiver: Receiver, site: uuid.UUID, path: str, **kind: Any
) -> uuid.UUID:
    async with pool.acquire() as conn:
        new = await rules.create(conn, settings.alerts_signing_secret, DEV, site, receiver.url(path), **kind)
    receiver.secrets[path] = new.secret
    return new.rule_id


async def send(settings: Settings, site: uuid.UUID, ids: list[str]) -> None:
    """Produced off the event loop: the receiver runs on it and must answer meanwhile."""
    now = datetime.now(UTC)
    msgs = [(f"{site}/{e}".encode(), message(site, e, occurred_at=now)) for e in ids]
    await asyncio.to_thread(produce, settings, msgs)


async def test_each_line_fires_once_per_period_despite_duplicates_and_a_worker_restart(
    pipeline: Pipeline, dispatcher: Process, receiver: Receiver, pool: asyncpg.Pool, settings: Settings
) -> None:
    site = await new_site(pool, quota=20, cap=30)
    done = subprocess.run(  # the CLI path: the secret is shown once, in the JSON
        [
            OPSMANTIK,
            "alerts",
            "create",
            "--site",
            str(site),
            "--builtin",
            "quota-80",
            "--url",
            receiver.url("q80"),
            "--json",
        ],
        env=env_for(settings, alerts_allow_http=1, alerts_allow_private=1),
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    receiver.secrets["q80"] = orjson.loads(done.stdout)["secret"]
    await add_rule(pool, settings, receiver, site, "q100", builtin="quota-100")
    await add_rule(pool, settings, receiver, site, "cap", builtin="hard-cap")
    await add_rule(pool, settings, receiver, site, "m10", meter="events", threshold=Decimal(10))
    ids = [f"e{i}" for i in range(35)]
    await send(settings, site, ids[:12])
    await send(settings, site, ids[:12])  # redelivered: duplicates add nothing
    await wait_for(ledgered(pool, site, 12), 30, what="12 rows")
    # Off the event loop: a blocked loop would hold the receiver's answers past the dispatcher's
    # timeout, and the receiver would count webhooks the dispatcher never saw acknowledged.
    await asyncio.to_thread(pipeline.restart, "worker")
    for chunk in (ids[5:18], ids[18:25], ids[10:35], ids):  # overlapping, duplicates in every chunk
        await send(settings, site, chunk)
    await wait_for(ledgered(pool, site, 35), 60, what="35 rows")

    async def all_four() -> bool:
        return all(receiver.acknowledged(p) for p in ("q80", "q100", "cap", "m10"))

    await wait_for(all_four, 30, what="the four crossings delivered")
    await asyncio.sleep(1.0)  # a second notification, if one were (wrongly) made, has time to arrive
    for path, line in (("q80", 16), ("q100", 20), ("cap", 30), ("m10", 10)):
        docs = receiver.acknowledged(path)
        assert len(docs) == 1 and len({w for p, w, _, _ in receiver.got if p == path}) == 1, (path, docs)
        assert docs[0]["type"] == "usage.threshold.crossed"
        assert docs[0]["data"]["threshold"] == line and docs[0]["data"]["value"] >= line
        assert docs[0]["data"]["period"] == f"{datetime.now(UTC):%Y-%m}"
    assert receiver.bad_signatures == 0
    rows = await pool.fetch("SELECT status FROM alert_outbox WHERE site_id = $1", site)
    assert [r["status"] for r in rows] == ["delivered"] * 4


async def test_a_failing_receiver_gets_the_same_webhook_id_until_it_acknowledges(
    pipeline: Pipeline, dispatcher: Process, receiver: Receiver, pool: asyncpg.Pool, settings: Settings
) -> None:
    site = await new_site(pool)
    receiver.fail_first["flaky"] = 2
    await add_rule(pool, settings, receiver, site, "flaky", meter="events", threshold=Decimal(3))
    await send(settings, site, ["a", "b", "c"])

    async def acked() -> bool:
        return bool(receiver.acknowledged("flaky"))

    await wait_for(acked, 30, what="the flaky receiver's acknowledgement")
    ids = [wid for p, wid, _, _ in receiver.got if p == "flaky"]
    assert len(ids) == 3 and len(set(ids)) == 1, ids  # 500, 500, 200: one webhook-id
    row = await pool.fetchrow("SELECT status, attempts FROM alert_outbox WHERE webhook_id = $1", ids[0])
    assert (row["status"], row["attempts"]) == ("delivered", 3)


async def test_hostile_receivers_do_not_hold_up_the_others(
    pipeline: Pipeline, dispatcher: Process, receiver: Receiver, pool: asyncpg.Pool, settings: Settings
) -> None:
    """Receivers that hang, send a huge body or redirect: their webhooks stay pending (a redirect
    is not followed: the target never sees it), while a good receiver's arrives meanwhile."""
    site = await new_site(pool)
    for path in ("hang", "huge", "redirect"):
        await add_rule(pool, settings, receiver, site, path, meter="events", threshold=Decimal(1))
    await send(settings, site, ["h1"])
    await wait_for(ledgered(pool, site, 1), 30, what="the hostile site's row")

    async def tried() -> bool:
        n = await pool.fetchval(
            "SELECT count(*) FROM alert_outbox WHERE site_id = $1 AND last_error IS NOT NULL",
            site,
        )
        return bool(n == 3)

    await wait_for(tried, 20, what="an attempt at each hostile receiver")
    good = await new_site(pool)
    await add_rule(pool, settings, receiver, good, "good", meter="events", threshold=Decimal(1))
    started = time.monotonic()
    await send(settings, good, ["g1"])

    async def delivered() -> bool:
        return bool(receiver.acknowledged("good"))

    await wait_for(delivered, 20, what="the good receiver's webhook")
    assert time.monotonic() - started < 10
    rows = await pool.fetch("SELECT last_error FROM alert_outbox WHERE site_id = $1 ORDER BY rule_id", site)
    errors = " | ".join(r["last_error"] for r in rows)
    assert "timeout" in errors and "HTTP 500" in errors and "HTTP 302" in errors, errors
    assert receiver.hits["ok"] == 0  # the redirect's target never got it


async def test_a_void_back_under_the_line_resolves_once(
    pipeline: Pipeline, dispatcher: Process, receiver: Receiver, pool: asyncpg.Pool, settings: Settings
) -> None:
    site = await new_site(pool, quota=4)
    await add_rule(pool, settings, receiver, site, "v100", builtin="quota-100")
    await add_rule(pool, settings, receiver, site, "vm", meter="events", threshold=Decimal(5))
    await send(settings, site, [f"v{i}" for i in range(5)])

    async def crossed() -> bool:
        return bool(receiver.acknowledged("v100")) and bool(receiver.acknowledged("vm"))

    await wait_for(crossed, 30, what="both crossings")
    async with pool.acquire() as conn:
        await void_events(conn, site, ["v0"], "test", "test")  # 4 events: under 5, still at the quota
        await void_events(conn, site, ["v1"], "test", "test")  # 3 events: under both

    async def resolved() -> bool:
        return len(receiver.acknowledged("v100")) == 2 and len(receiver.acknowledged("vm")) == 2

    await wait_for(resolved, 30, what="both resolutions")
    await asyncio.sleep(0.5)
    kinds = {p: Counter(d["type"] for d in receiver.acknowledged(p)) for p in ("v100", "vm")}
    for p in ("v100", "vm"):
        assert kinds[p] == {"usage.threshold.crossed": 1, "usage.threshold.resolved": 1}, kinds
    by_type: dict[str, list[Any]] = defaultdict(list)
    for d in receiver.acknowledged("vm"):
        by_type[d["type"]].append(d["data"]["value"])
    assert by_type["usage.threshold.resolved"] == [4]


PROPERTY_SEED = int(os.environ.get("ALERTS_PROPERTY_SEED", "202627"))


async def test_the_outbox_equals_the_crossings_computed_from_the_ledger(
    pipeline: Pipeline, receiver: Receiver, pool: asyncpg.Pool, settings: Settings
) -> None:
    """The property of tests/unit/test_alert_crossings_property.py, once against the real worker
    (batches of 7) and `events void`: seeded random events (two billing months, quantities 1-5, a
    SUM meter's values -4..6 or absent), duplicates in every wave, a whole wave redelivered, voids
    between waves (enough at the end to go back under the lines), then a wave crossing again. The
    notifications that must exist are recounted from the ledger rows and billing_voids alone, in
    ledger order (one worker: its transactions are serial, each row's ledgered_at is its batch's
    start; voids run while the site is idle): alert_outbox must equal them exactly, each row
    written by that transaction (created_at = its now())."""
    rng = random.Random(PROPERTY_SEED)
    tag = uuid.uuid4().hex[:8]
    quota, cap = 12, 18
    site = await new_site(pool, quota=quota, cap=cap)
    async with pool.acquire() as conn:
        delta = await definitions.create(conn, f"adelta-{tag}", f"adelta_{tag}", "SUM", "$.delta", {})
    specs: dict[str, tuple[str, str | None, Decimal | None]] = {
        "q80": ("quota_80", None, None),
        "q100": ("quota_100", None, None),
        "cap": ("hard_cap", None, None),
        "events": ("meter", "events", Decimal(14)),
        "quantity": ("meter", "quantity", Decimal(40)),
        "delta": ("meter", delta.slug, Decimal(5)),
    }
    kinds: dict[uuid.UUID, tuple[str, str | None, Decimal | None]] = {}
    names: dict[uuid.UUID, str] = {}
    for name, (kind, meter, threshold) in specs.items():
        how = {"meter": meter, "threshold": threshold} if meter else {"builtin": kind.replace("_", "-")}
        rule_id = await add_rule(pool, settings, receiver, site, f"p{tag}-{name}", **how)
        kinds[rule_id], names[rule_id] = (kind, meter, threshold), name

    now = datetime.now(UTC)
    last_month = now.replace(day=1, hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    made: dict[str, bytes] = {}
    voided: set[str] = set()

    def event(i: int, when: datetime | None = None) -> str:
        eid = f"p{i}"
        typed = rng.random() < 0.7
        props: dict[str, object] = {"delta": rng.randint(-4, 6)} if typed and rng.random() < 0.85 else {}
        when = when or (now if rng.random() < 0.6 else last_month)
        doc = orjson.loads(message(site, eid, quantity=rng.randint(1, 5), occurred_at=when, properties=props))
        doc["type"] = delta.event_type if typed else "api_call"
        made[eid] = orjson.dumps(doc)
        return eid

    async def wave(ids: list[str]) -> None:
        copies = ids + rng.sample(ids, len(ids) // 3)  # duplicates in the wave
        rng.shuffle(copies)
        await asyncio.to_thread(produce, settings, [(f"{site}/{e}".encode(), made[e]) for e in copies])

    async def void(event_ids: list[str]) -> None:
        async with pool.acquire() as conn:
            for e in event_ids:  # one transaction each
                await void_events(conn, site, [e], "property test", "test")
                voided.add(e)

    waves = [[event(i) for i in range(n, n + 14)] for n in (0, 14, 28)]
    sent = 0
    for k, ids in enumerate(waves):
        await wave(ids)
        sent += len(ids)
        await wait_for(ledgered(pool, site, sent), 30, what=f"wave {k}")
        if k == 1:
            await wave(waves[0] + waves[1])  # redelivered: nothing new
        live = [e for w in waves[: k + 1] for e in w]
        await void(rng.sample([e for e in live if e not in voided], 2))
    # back under every line (the builtins' and the events meter's) in each month, then over again
    rows = await pool.fetch(
        "SELECT i.event_id, i.billing_month FROM ingest_idempotency i "
        "LEFT JOIN billing_voids v USING (site_id, event_id) "
        "WHERE i.site_id = $1 AND v.event_id IS NULL ORDER BY i.event_id",
        site,
    )
    for month in sorted({r["billing_month"] for r in rows}):
        live = [r["event_id"] for r in rows if r["billing_month"] == month]
        await void(live[: max(0, len(live) - 8)])
    again = [event(i, now) for i in range(42, 50)]
    await wave(again)
    await wait_for(ledgered(pool, site, sent + len(again)), 30, what="the last wave")

    expected = await crossings_from_the_ledger(pool, site, kinds, delta, quota, cap)
    got = sorted(
        (
            r["created_at"],
            r["rule_id"],
            orjson.loads(r["body"])["data"]["period"],
            r["event_type"],
            Decimal(str(orjson.loads(r["body"])["data"]["value"])),
            Decimal(str(orjson.loads(r["body"])["data"]["threshold"])),
        )
        for r in await pool.fetch("SELECT * FROM alert_outbox WHERE site_id = $1", site)
    )
    seen = Counter((names[r], t.rsplit(".", 1)[1]) for _, r, _, t, _, _ in expected)
    assert got == sorted(expected), (PROPERTY_SEED, seen)
    # the history did what it is for: each rule crossed; the builtins and `events` resolved, and
    # crossed again after
    for name in specs:
        assert seen[(name, "crossed")] >= 1, (PROPERTY_SEED, seen)
    for name in ("q80", "q100", "cap", "events"):
        assert seen[(name, "resolved")] >= 1, (PROPERTY_SEED, seen)
    assert seen[("q80", "crossed")] >= 2, (PROPERTY_SEED, seen)


async def crossings_from_the_ledger(
    pool: asyncpg.Pool,
    site: uuid.UUID,
    kinds: dict[uuid.UUID, tuple[str, str | None, Decimal | None]],
    delta: Meter,
    quota: int,
    cap: int,
) -> list[tuple[datetime, uuid.UUID, str, str, Decimal, Decimal]]:
    """The notifications that must exist, from the site's ledger rows and voids alone: its
    transactions in ledger order (a batch: the rows sharing a ledgered_at; a void: its voided_at),
    each deciding every rule for the billing months it touched, with each value recounted."""
    rows = await pool.fetch(
        "SELECT event_id, billing_month, quantity, event_type, properties, ledgered_at "
        "FROM ingest_idempotency WHERE site_id = $1",
        site,
    )
    voids = await pool.fetch(
        "SELECT event_id, booked_month, voided_at FROM billing_voids WHERE site_id = $1", site
    )
    row_of = {r["event_id"]: r for r in rows}

    def contribution(meter: str | None, r: asyncpg.Record) -> Decimal:
        if meter is None or meter == "events":  # the builtins read the invoice's event count
            return Decimal(1)
        if meter == "quantity":
            return Decimal(r["quantity"])
        if r["event_type"] != delta.event_type or r["ledgered_at"] < delta.created_at:
            return Decimal(0)
        props = r["properties"]
        props = orjson.loads(props) if isinstance(props, str) else props or {}
        value = props.get("delta")
        return Decimal(value) if isinstance(value, int) else Decimal(0)

    touched: dict[datetime, set[date]] = defaultdict(set)
    for r in rows:
        touched[r["ledgered_at"]].add(r["billing_month"])
    for v in voids:
        touched[v["voided_at"]].add(v["booked_month"])
    decisions = []
    for t in sorted(touched):
        for month in sorted(touched[t]):
            live = [r for r in rows if r["ledgered_at"] <= t and r["billing_month"] == month]
            gone = [
                row_of[v["event_id"]] for v in voids if v["voided_at"] <= t and v["booked_month"] == month
            ]
            for rule_id, (kind, meter, threshold) in kinds.items():
                value = sum((contribution(meter, r) for r in live), Decimal(0)) - sum(
                    (contribution(meter, r) for r in gone), Decimal(0)
                )
                decisions.append(
                    (t, rule_id, f"{month:%Y-%m}", value, alert_oracle.line(kind, threshold, quota, cap))
                )
    found, _ = alert_oracle.notifications(decisions)
    return found
