"""sla-report against a hand calculation: the real gateway app (in process, real Postgres) with a
scripted publisher injecting 503s, real rate-limit, quota and 400/415 answers, one announced
maintenance window (via the CLI) and one unannounced window that must not be excluded; then the
§3 tier at each boundary from seeded rollup rows, and data loss from a dead letter."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.events import Event
from opsmantik.gateway.app import STATE, create_app
from opsmantik.gateway.publisher import Stored, Unavailable
from opsmantik.gateway.sla_rollup import SLA
from opsmantik.months import label, month_start

from tests.support.billing import auth, cli
from tests.support.environment import module_environment
from tests.support.pipeline import wait_for

pytestmark = pytest.mark.integration
settings, pool = module_environment()


class ScriptedPublisher:
    """Answers from a script: "ok" → accepted; "down" → Unavailable (503); "crash" → an
    unexpected error (the middleware's 503)."""

    def __init__(self) -> None:
        self.script: list[str] = []

    async def publish(
        self, site_id: uuid.UUID, events: Sequence[Event], statuses: Sequence[str], received_at: datetime
    ) -> list[Stored]:
        step = self.script.pop(0)
        if step == "down":
            raise Unavailable()
        if step == "crash":
            raise RuntimeError("injected")
        return [Stored(s, {"partition": 0, "offset": i}) for i, s in enumerate(statuses)]


@pytest.fixture(scope="module")
async def app_client(settings: Settings) -> AsyncIterator[tuple[TestClient, ScriptedPublisher]]:
    pub = ScriptedPublisher()
    app = create_app(dataclasses.replace(settings, usage_refresh_s=0.2), publisher=pub)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, pub
    await client.close()


def window_start() -> datetime:
    """>= 48 h ahead, on the hour, with the 3 hours after it in the same month."""
    start = (datetime.now(UTC) + timedelta(hours=49)).replace(minute=0, second=0, microsecond=0)
    if (start + timedelta(hours=3)).month != start.month:
        start += timedelta(hours=4)
    return start


def body(at: datetime, n: int = 1) -> bytes:
    return orjson.dumps(
        {
            "events": [
                {"event_id": uuid.uuid4().hex, "type": "t", "occurred_at": at.isoformat()} for _ in range(n)
            ]
        }
    )


async def test_maintenance_add_needs_48_hours_notice(settings: Settings) -> None:
    soon = datetime.now(UTC) + timedelta(hours=47, minutes=59)
    done = cli(
        settings,
        "maintenance",
        "add",
        soon.isoformat(),
        (soon + timedelta(hours=1)).isoformat(),
        "--reason",
        "too late",
    )
    assert done.returncode == 2 and "48 h" in done.stderr
    naive = (datetime.now(UTC) + timedelta(days=5)).replace(tzinfo=None).isoformat()
    assert cli(settings, "maintenance", "add", naive, naive, "--reason", "x").returncode == 2


async def test_sla_report_matches_a_hand_calculation(
    settings: Settings, pool: asyncpg.Pool, app_client: tuple[TestClient, ScriptedPublisher]
) -> None:
    client, pub = app_client
    start = window_start()
    month = start.date().replace(day=1)
    done = cli(
        settings,
        "maintenance",
        "add",
        start.isoformat(),
        (start + timedelta(hours=1)).isoformat(),
        "--reason",
        "broker upgrade",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    t_in, t_out = start + timedelta(minutes=10), start + timedelta(hours=2)
    # Unannounced (recorded 1 h before it starts): it must NOT be excluded.
    await pool.execute(
        "INSERT INTO maintenance_windows (starts_at, ends_at, reason, created_at) "
        "VALUES ($1, $2, 'unannounced', $3)",
        t_out - timedelta(minutes=5),
        t_out + timedelta(minutes=5),
        t_out - timedelta(hours=1),
    )
    async with pool.acquire() as conn:
        k = await sites.create_site_with_key(conn, "hand", hard_cap=5, rate=0.0001, burst=21)
    now = datetime.now(UTC)
    # Usage of the current month is at the hard cap; the previous month is open and below it.
    await pool.execute(
        "INSERT INTO site_usage_monthly (site_id, month, events) VALUES ($1, $2, 5)",
        k.site_id,
        now.date().replace(day=1),
    )
    state = client.app[STATE]
    # The usage cache has refreshed once (closed months known); the site's usage is read by its
    # first request (quota.py: the cache holds the active sites only).
    await wait_for(lambda: _refreshed(state), 10, 0.1, "usage cache")
    sla = client.app[SLA]
    earlier = month_start(now.date().replace(day=1)) - timedelta(minutes=30)  # accepted, not capped

    async def post(
        at: datetime, *, payload: bytes | None = None, ctype: str = "application/json", key: str = k.api_key
    ) -> int:
        sla.clock = lambda: at
        headers = {**auth(key), "Content-Type": ctype}
        async with client.post(
            "/api/sync", data=payload if payload is not None else body(earlier), headers=headers
        ) as r:
            return r.status

    pub.script = ["ok"] * 8 + ["down"] * 2 + ["crash"]
    answers = [await post(t_out) for _ in range(11)]  # 8 × 200, 3 × 503
    answers += [await post(t_out, payload=b'{"events": []}') for _ in range(2)]  # 2 × 400
    answers.append(await post(t_out, ctype="text/plain"))  # 415
    capped = body(now - timedelta(seconds=5))  # this month's usage is at the hard cap
    answers += [await post(t_out, payload=capped) for _ in range(2)]  # 2 × 429 quota
    pub.script = ["ok"] * 3 + ["down"] * 2
    answers += [await post(t_in) for _ in range(5)]  # window: 3 × 200, 2 × 503
    answers += [await post(t_out) for _ in range(4)]  # bucket empty: 4 × 429 rate
    answers.append(await post(t_out, key="not-a-key"))  # 401: no site, not counted
    assert answers == [200] * 8 + [503] * 3 + [400] * 2 + [415] + [429] * 2 + [200] * 3 + [503] * 2 + [
        429
    ] * 4 + [401]
    await sla.flush(state.pool)

    done = cli(settings, "sla-report", "--month", label(month), "--site", str(k.site_id), "--json")
    assert done.returncode == 1, done.stderr  # a credit is owed
    site = orjson.loads(done.stdout)["sites"][0]
    # Hand calculation: 25 requests of the site; the window holds 5 (3 persisted); outside it
    # 20 - 4 rate-limited - 2 quota - 3 invalid = 11 eligible, of which 8 persisted.
    assert {
        k2: site[k2]
        for k2 in (
            "received",
            "persisted",
            "errors_5xx",
            "errors_503",
            "rate_limited",
            "quota_exceeded",
            "invalid",
            "in_maintenance",
            "eligible",
            "eligible_persisted",
        )
    } == {
        "received": 25,
        "persisted": 11,
        "errors_5xx": 5,
        "errors_503": 5,
        "rate_limited": 4,
        "quota_exceeded": 2,
        "invalid": 3,
        "in_maintenance": 5,
        "eligible": 11,
        "eligible_persisted": 8,
    }
    assert site["reliability"] == pytest.approx(8 / 11)
    assert site["uptime"] == pytest.approx(1 - 5 / 25)
    assert site["credit_percent"] == 25 and site["lost_events"] == 0
    rows = await pool.fetchval("SELECT count(*) FROM sla_requests WHERE site_id = $1", k.site_id)
    assert rows == 2  # a rollup: one row per minute with traffic (t_in, t_out), not one per request


async def _refreshed(state: object) -> bool:
    return state.usage.loaded_at is not None  # type: ignore[attr-defined]


async def test_credit_tier_at_each_boundary_and_on_data_loss(settings: Settings, pool: asyncpg.Pool) -> None:
    month = date(2026, 3, 1)
    minute = month_start(month) + timedelta(days=3)
    expect = {999: 0, 998: 10, 990: 10, 989: 25, 1000: 100}  # persisted of 1000 eligible → credit %
    ids: dict[int, uuid.UUID] = {}
    async with pool.acquire() as conn:
        for persisted in expect:
            s = await sites.create_site(conn, f"tier-{persisted}")
            ids[persisted] = s.site_id
            # + 7 rate-limited, 3 quota, 5 invalid answers: excluded, they move nothing.
            await conn.execute(
                "INSERT INTO sla_requests (site_id, minute, received, persisted, errors_5xx, errors_503, "
                "rate_limited, quota_exceeded, invalid) VALUES ($1, $2, 1015, $3, $4, $4, 7, 3, 5)",
                s.site_id,
                minute,
                persisted,
                1000 - persisted,
            )
        # The 100 % site: reliability 100 %, but an acknowledged event was dead-lettered.
        payload = orjson.dumps(
            {
                "v": 1,
                "site_id": str(ids[1000]),
                "event_id": "lost-1",
                "gateway_status": "accepted",
                "quantity": "NaN",
            }
        )
        await conn.execute(
            "INSERT INTO ingest_dead_letter (topic, kafka_partition, kafka_offset, site_id, "
            "event_id, reason, payload, created_at) VALUES ('t', 0, 1, $1, 'lost-1', 'bad', "
            "$2, $3)",
            str(ids[1000]),
            payload,
            minute,
        )
    done = cli(settings, "sla-report", "--month", label(month), "--json")
    assert done.returncode == 1
    got = {r["site_id"]: r for r in orjson.loads(done.stdout)["sites"]}
    for persisted, percent in expect.items():
        r = got[str(ids[persisted])]
        assert r["credit_percent"] == percent, (persisted, r)
        assert r["eligible"] == 1000
    assert got[str(ids[1000])]["lost_events"] == 1 and "data loss" in got[str(ids[1000])]["credit_reason"]
    done = cli(settings, "sla-report", "--month", label(month), "--site", str(ids[999]))
    assert done.returncode == 0 and "no credit" in done.stdout, done.stdout
