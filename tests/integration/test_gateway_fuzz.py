"""Generated hostile input against the running gateway: >= 1000 requests, zero 5xx, and nothing
from a rejected request reaches the topic or the outbox."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import asyncpg
import orjson
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from opsmantik.config import Settings

from tests.support import gateway as gateway_support
from tests.support.gateway import Gateway, new_site, read_topic

gateway = gateway_support.gateway

RECENT = datetime.now(UTC).isoformat()


def _dumps(value: object) -> bytes:
    # stdlib json: it writes what orjson refuses (huge ints, lone surrogates, Infinity)
    return json.dumps(value).encode()


HOSTILE = st.sampled_from(
    [
        "'; DROP TABLE ingest_idempotency;--",
        "\x00",
        "\ud7ff",
        "../../etc/passwd",
        "<script>",
        "%00",
        "A" * 129,
        "1e309",
        "-1",
        "9" * 40,
        "\r\nX-Injected: 1",
        "${jndi:ldap://x}",
        "é" * 70,
        "",
    ]
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), HOSTILE)
JSON = st.recursive(
    JSON_LEAF,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)
EVENTISH = st.fixed_dictionaries(
    {
        "event_id": st.one_of(
            HOSTILE, st.text(max_size=130), st.integers(), st.from_regex(r"fz-[a-z0-9]{1,20}", fullmatch=True)
        ),
        "type": st.one_of(HOSTILE, st.text(max_size=70), st.integers(), st.just("ok")),
        "occurred_at": st.one_of(
            HOSTILE, st.text(max_size=30), st.just("2020-01-01T00:00:00Z"), st.just(RECENT), st.just(RECENT)
        ),
    },
    optional={
        "quantity": st.one_of(st.integers(min_value=-2, max_value=2**70), st.floats(), HOSTILE),
        "properties": JSON,
        "site_id": st.uuids().map(str),
        "extra": JSON,
    },
)
BODY = st.one_of(
    st.binary(max_size=200),
    JSON.map(_dumps),
    EVENTISH.map(_dumps),
    st.lists(EVENTISH, max_size=5).map(lambda evs: _dumps({"events": evs})),
    st.integers(min_value=1000, max_value=1030).map(lambda d: b"[" * d + b"]" * d),
    st.sampled_from(
        [
            b"\xff\xfe{}",
            b'{"events": [{"event_id": "\xed\xa0\x80"}]}',
            b"{" * 5000,
            b'{"quantity": 1' + b"0" * 400 + b"}",
        ]
    ),
)
CTYPE = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/json\t",
        "*/*",
        "application/json; charset=latin1",
    ]
)
AUTH = st.sampled_from(
    [
        "good",
        "good",
        "good",
        "none",
        "Bearer ' OR 1=1 --",
        "Bearer omk_" + "z" * 43,
        "Basic Zm9vOmJhcg==",
        "Bearer " + "A" * 5000,
    ]
)

COUNT = {"n": 0}


async def test_hostile_requests_never_5xx_and_capture_nothing(
    gateway: Gateway, pool: asyncpg.Pool, settings: Settings
) -> None:
    site, key = await new_site(pool, rate=1e6, burst=1_000_000)
    accepted: set[str] = set()
    codes: dict[int, int] = {}
    loop = asyncio.get_running_loop()

    @hsettings(max_examples=1100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=BODY, ctype=CTYPE, auth=AUTH)
    def one(body: bytes, ctype: str, auth: str) -> None:
        headers = {"Content-Type": ctype}
        if auth == "good":
            headers["Authorization"] = f"Bearer {key}"
        elif auth != "none":
            headers["Authorization"] = auth
        fut = asyncio.run_coroutine_threadsafe(_send(gateway, body, headers), loop)
        status, payload = fut.result(30)
        COUNT["n"] += 1
        codes[status] = codes.get(status, 0) + 1
        assert status < 500, (status, body[:200], payload[:200])
        if status == 200:
            accepted.update(x["event_id"] for x in orjson.loads(payload)["results"])

    await asyncio.to_thread(one)
    print(f"\nfuzz: {COUNT['n']} requests, codes {dict(sorted(codes.items()))}")
    assert COUNT["n"] >= 1000
    msgs = await asyncio.to_thread(read_topic, settings)
    ours = {m["event_id"] for k, m in msgs if k.split(b"/", 1)[0] == str(site).encode()}
    assert ours <= accepted, ours - accepted
    async with pool.acquire() as conn:
        outbox = {
            r["event_id"]
            for r in await conn.fetch("SELECT event_id FROM ingest_fallback_buffer WHERE site_id = $1", site)
        }
    assert outbox <= accepted


async def _send(gw: Gateway, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    r = await gw.client.post("/api/sync", data=body, headers=headers)
    return r.status, await r.read()
