"""Usage alerts under failure (docs/alerts.md "What holds"): a receiver down for a time-compressed
24 hours, a dispatcher SIGKILLed mid-delivery, a flood from 8 concurrent producers through the
gateway, and the rules-per-site cap at its edge. The real worker decides the crossings; real
`opsmantik dispatcher` processes deliver them; the receiver verifies every webhook with the official
`standardwebhooks` package and keeps what a deduplicating receiver would (the webhook-ids)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import standardwebhooks
from aiohttp import web
from opsmantik import sites
from opsmantik.alerts import rules, urls
from opsmantik.billing.voids import void_events
from opsmantik.config import Settings

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
# Small worker batches: a flood is many ledger transactions, each deciding the crossing again.
pipeline = pipeline_fixture("gateway", "worker", "relay", worker_batch=7)
DEV = urls.UrlPolicy(allow_http=True, allow_private=True)
DEV_ENV = {"alerts_allow_http": 1, "alerts_allow_private": 1}
# Production: backoff 5 s doubling to 1 h, parked after 24 h (about 30 attempts). Compressed:
# 20 ms doubling to 250 ms, parked after 3 s (about 15 attempts): the same schedule's shape.
COMPRESSED_DAY = {
    "dispatcher_backoff_base_s": 0.02,
    "dispatcher_backoff_cap_s": 0.25,
    "dispatcher_retry_for_s": 3.0,
    "dispatcher_short_retry_for_tests": 1,
}


@dataclass
class Receiver:
    """A deduplicating receiver: verifies each webhook, answers 200 and keeps its webhook-id.
    With `hold_first`, the first request of each webhook-id is held (never answered) until
    `release` is set: the dispatcher is killed while it waits."""

    secrets: dict[str, str] = field(default_factory=dict)  # path -> whsec_
    port: int = field(default_factory=free_port)
    hold_first: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held: list[str] = field(default_factory=list)  # webhook-ids of held requests
    acked: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # path, id, doc
    bad_signatures: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["name"]
        body = await request.read()
        try:
            doc = standardwebhooks.Webhook(self.secrets[path]).verify(body, dict(request.headers))
        except standardwebhooks.WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400)
        webhook_id = request.headers["webhook-id"]
        if self.hold_first and webhook_id not in self.held:
            self.held.append(webhook_id)
            await asyncio.wait_for(self.release.wait(), 60)
            return web.Response(status=503)  # its dispatcher is dead by now: nobody reads this
        self.acked.append((path, webhook_id, doc))
        return web.Response(status=200)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook/{name}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{path}"

    def ids(self, path: str | None = None) -> list[str]:
        return [wid for p, wid, _ in self.acked if path is None or p == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()  # not listening yet: each test starts it when the receiver is "up"
    yield r
    await r.stop()


@pytest.fixture
def dispatchers(pipeline: Pipeline) -> Iterator[list[Process]]:
    """Dispatcher processes a test starts (`start_dispatcher`); stopped (or found killed) at the end."""
    started: list[Process] = []
    yield started
    for proc in started:
        proc.stop()


def start_dispatcher(pipeline: Pipeline, started: list[Process], name: str, **env: object) -> Process:
    proc = opsmantik_process(
        pipeline.settings,
        pipeline.log_dir,
        name,
        "dispatcher",
        **DEV_ENV,
        dispatcher_idle_s=0.05,
        dispatcher_concurrency=8,
        dispatcher_metrics_port=0,
        **env,
    )
    started.append(proc.start())
    return proc


async def add_rule(
    pool: asyncpg.Pool, settings: Settings, receiver: Receiver, site: uuid.UUID, path: str, **kind: Any
) -> uuid.UUID:
    async with pool.acquire() as conn:
        new = await rules.create(conn, settings.alerts_signing_secret, DEV, site, receiver.url(path), **kind)
    receiver.secrets[path] = new.secret
    return new.rule_id


async def new_site(pool: asyncpg.Pool, quota: int | None = None) -> uuid.UUID:
    async with pool.acquire() as conn:
        return (await sites.create_site(conn, f"d-{uuid.uuid4().hex[:8]}", monthly_quota=quota)).site_id


def send(settings: Settings, site: uuid.UUID, ids: list[str]) -> None:
    now = datetime.now(UTC)
    produce(settings, [(f"{site}/{e}".encode(), message(site, e, occurred_at=now)) for e in ids])


async def outbox_rows(pool: asyncpg.Pool, site: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT o.webhook_id, o.rule_id, o.event_type, o.status, o.attempts FROM alert_outbox o "
        "WHERE o.site_id = $1 ORDER BY o.created_at, o.webhook_id",
        site,
    )
    return rows


def opsmantik(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPSMANTIK, *args],
        env=env_for(settings, **DEV_ENV),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_receiver_down_for_a_compressed_day_gets_every_webhook_once_after_resend(
    pipeline: Pipeline,
    dispatchers: list[Process],
    receiver: Receiver,
    pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    """Crossings keep happening while the receiver is down; each webhook is retried with backoff for
    the (compressed) day, then parked and listed; `alerts resend` delivers each exactly once, with
    the webhook-id it had from the start."""
    start_dispatcher(pipeline, dispatchers, "dispatcher-day", dispatcher_timeout_s=1.0, **COMPRESSED_DAY)
    site = await new_site(pool, quota=10)
    for path, kind in (
        ("m3", {"meter": "events", "threshold": Decimal(3)}),
        ("q80", {"builtin": "quota-80"}),
        ("q100", {"builtin": "quota-100"}),
        ("m12", {"meter": "events", "threshold": Decimal(12)}),
    ):
        await add_rule(pool, settings, receiver, site, path, **kind)

    def retried(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:  # n webhooks written, each failed at least twice already
            rows = await outbox_rows(pool, site)
            return len(rows) == n and all(r["attempts"] >= 2 for r in rows)

        return check

    # Three waves of crossings, each while the earlier ones are being retried against a dead port.
    for upto, webhooks in ((4, 1), (9, 2), (13, 4)):
        send(settings, site, [f"e{i}" for i in range(upto)])
        await wait_for(ledgered(pool, site, upto), 30, what=f"{upto} ledger rows")
        await wait_for(retried(webhooks), 15, what=f"{webhooks} webhooks retried")

    async def all_parked() -> bool:
        rows = await outbox_rows(pool, site)
        return len(rows) == 4 and all(r["status"] == "parked" for r in rows)

    await wait_for(all_parked, 20, what="the four webhooks parked")
    rows = await outbox_rows(pool, site)
    assert min(r["attempts"] for r in rows) >= 5, rows  # retried through the whole window
    parked = opsmantik(settings, "alerts", "deliveries", "--site", str(site), "--status", "parked", "--json")
    assert parked.returncode == 0, parked.stderr
    listed = {d["webhook_id"] for d in orjson.loads(parked.stdout)}
    assert listed == {r["webhook_id"] for r in rows}

    await receiver.start()  # back up; parked webhooks wait for an operator's resend
    for webhook_id in sorted(listed):
        # Off the event loop: the receiver answers on it meanwhile.
        done = await asyncio.to_thread(opsmantik, settings, "alerts", "resend", webhook_id)
        assert done.returncode == 0, done.stderr

    async def delivered() -> bool:
        rows = await outbox_rows(pool, site)
        return all(r["status"] == "delivered" for r in rows) and len(receiver.acked) >= 4

    await wait_for(delivered, 20, what="the resent webhooks delivered")
    await asyncio.sleep(0.5)  # a second copy, if one were (wrongly) sent, has time to arrive
    assert Counter(receiver.ids()) == Counter(listed), receiver.ids()  # each once, the same ids
    assert receiver.bad_signatures == 0
    values = {p: doc["data"]["threshold"] for p, _, doc in receiver.acked}
    assert values == {"m3": 3, "q80": 8, "q100": 10, "m12": 12}
    assert {doc["type"] for _, _, doc in receiver.acked} == {"usage.threshold.crossed"}


async def test_a_dispatcher_killed_mid_delivery_redelivers_with_the_same_webhook_id(
    pipeline: Pipeline,
    dispatchers: list[Process],
    receiver: Receiver,
    pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    """The receiver holds the first request of each webhook; the dispatcher is SIGKILLed while it
    waits; another dispatcher sends each again after the lease, with the same webhook-id, once."""
    receiver.hold_first = True
    await receiver.start()
    site = await new_site(pool)
    for n in (1, 2, 3):
        await add_rule(pool, settings, receiver, site, f"k{n}", meter="events", threshold=Decimal(n))
    send(settings, site, ["k1", "k2", "k3"])

    async def written() -> bool:
        return len(await outbox_rows(pool, site)) == 3

    await wait_for(written, 30, what="three webhooks in the outbox")
    # Timeout 2 s: the lease is 2 × 2 + 1 = 5 s; the kill comes well inside the first attempt.
    first = start_dispatcher(pipeline, dispatchers, "dispatcher-a", dispatcher_timeout_s=2.0)

    async def all_held() -> bool:
        first.check_alive()
        return len(receiver.held) == 3

    await wait_for(all_held, 20, what="the three first attempts held by the receiver")
    first.kill()  # SIGKILL: no outcome recorded, the leases stay
    start_dispatcher(pipeline, dispatchers, "dispatcher-b", dispatcher_timeout_s=2.0)

    async def delivered() -> bool:
        rows = await outbox_rows(pool, site)
        return all(r["status"] == "delivered" for r in rows) and len(receiver.acked) >= 3

    await wait_for(delivered, 30, what="redelivery by the second dispatcher")
    await asyncio.sleep(0.5)  # a third copy, if one were (wrongly) sent, has time to arrive
    rows = await outbox_rows(pool, site)
    notifications = {r["webhook_id"] for r in rows}
    assert set(receiver.held) == notifications  # the killed attempts
    assert Counter(receiver.ids()) == Counter(notifications)  # the redelivery: the same ids, once each
    assert [r["attempts"] for r in rows] == [2, 2, 2]
    assert receiver.bad_signatures == 0


async def post_all(base: str, key: str, batches: list[list[str]]) -> list[int]:
    """One producer: its requests one after another, on its own connection."""
    statuses = []
    async with aiohttp.ClientSession() as s:
        for ids in batches:
            now = datetime.now(UTC).isoformat()
            events = [{"event_id": e, "type": "api_call", "occurred_at": now} for e in ids]
            async with s.post(
                f"{base}/api/sync",
                json={"events": events},
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            ) as r:
                statuses.append(r.status)
    return statuses


async def test_a_flood_from_8_producers_fires_each_line_once_and_a_void_resolves_once(
    pipeline: Pipeline,
    dispatchers: list[Process],
    receiver: Receiver,
    pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    """8 concurrent producers through the gateway, every event sent twice (by its producer and a
    neighbour), 320 distinct events across three lines: each line fires once in the period;
    two voids back under the lines resolve each once."""
    await receiver.start()
    start_dispatcher(pipeline, dispatchers, "dispatcher-flood", dispatcher_timeout_s=2.0)
    async with pool.acquire() as conn:
        key = await sites.create_site_with_key(conn, f"f-{uuid.uuid4().hex[:8]}", monthly_quota=200)
    site = key.site_id
    await add_rule(pool, settings, receiver, site, "q80", builtin="quota-80")  # 160
    await add_rule(pool, settings, receiver, site, "q100", builtin="quota-100")  # 200
    await add_rule(pool, settings, receiver, site, "m150", meter="events", threshold=Decimal(150))
    own = [[f"p{p}-{i}" for i in range(40)] for p in range(8)]
    plans = [  # requests of 10: 5 of its own events and 5 of its neighbour's (duplicates)
        [own[p][i : i + 5] + own[(p + 1) % 8][i : i + 5] for i in range(0, 40, 5)] for p in range(8)
    ]
    answers = await asyncio.gather(*(post_all(pipeline.url, key.api_key, plan) for plan in plans))
    assert {s for statuses in answers for s in statuses} == {200}, answers
    await wait_for(ledgered(pool, site, 320), 60, what="320 ledger rows")
    assert await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site) == 320

    def acked(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(receiver.acked) >= n

        return check

    await wait_for(acked(3), 30, what="the three crossings delivered")
    async with pool.acquire() as conn:
        await void_events(conn, site, own[0] + own[1] + own[2], "test", "test")  # 200: at the quota
        await void_events(conn, site, own[3][:11], "test", "test")  # 189: under the quota
        await void_events(conn, site, own[4], "test", "test")  # 149: under 80 % and the meter's 150
        await void_events(conn, site, own[5][:5], "test", "test")  # 144: still under, nothing new
    await wait_for(acked(5), 30, what="the resolutions delivered")
    await asyncio.sleep(1.0)  # a duplicate, if one were (wrongly) made, has time to arrive
    kinds = {
        p: Counter(doc["type"] for path, _, doc in receiver.acked if path == p)
        for p in ("q80", "q100", "m150")
    }
    crossed, resolved = "usage.threshold.crossed", "usage.threshold.resolved"
    assert kinds == {
        "q80": {crossed: 1, resolved: 1},
        "q100": {crossed: 1, resolved: 1},
        "m150": {crossed: 1, resolved: 1},
    }, kinds
    rows = await outbox_rows(pool, site)
    assert Counter(receiver.ids()) == Counter(r["webhook_id"] for r in rows)
    assert len(rows) == 6 and receiver.bad_signatures == 0


async def test_a_site_has_at_most_100_rules(pool: asyncpg.Pool, settings: Settings) -> None:
    """The cap at its edge through the CLI: the 100th rule is accepted, the 101st refused (exit 2,
    a message saying what to do), and the site still has 100."""
    site = await new_site(pool)
    url = "http://127.0.0.1:9/hook"  # never called: no events for this site
    async with pool.acquire() as conn:
        for _ in range(99):
            await rules.create(
                conn, settings.alerts_signing_secret, DEV, site, url, meter="events", threshold=Decimal(1)
            )
    create = ("alerts", "create", "--site", str(site), "--meter", "events", "--threshold", "5", "--url", url)
    hundredth = opsmantik(settings, *create)
    assert hundredth.returncode == 0, hundredth.stderr
    refused = opsmantik(settings, *create)
    assert refused.returncode == 2, (refused.returncode, refused.stdout, refused.stderr)
    assert f"--site {site}: at most 100 rules per site (delete one first)" in refused.stderr
    assert await pool.fetchval("SELECT count(*) FROM alert_rules WHERE site_id = $1", site) == 100
