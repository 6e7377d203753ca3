"""The ingest routes' dispatch before the router (gateway/app.py `dispatch_ingest_first`, issue 28):
POST /api/sync and POST /api/v1/events are served without the router's resolve and the middleware
chain, and answer, count and roll up exactly as the router's path does. The router's path of the
same handler is reached with a query string (`?via=router`: the raw path no longer matches), so
each case is sent both ways and compared."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import asyncpg
import orjson
import pytest
from aiohttp import web_urldispatcher
from opsmantik.gateway.sla_rollup import SLA

from tests.support import gateway as gateway_support
from tests.support.gateway import Gateway, auth, event, new_site

pytestmark = pytest.mark.integration
gateway = gateway_support.gateway  # the module-scoped fixture
ROUTER = "?via=router"
CLOUDEVENT = {"specversion": "1.0", "id": "d1", "source": "t", "type": "request", "subject": "c"}


@pytest.fixture
def resolves(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths the router resolved while the test ran."""
    seen: list[str] = []
    original = web_urldispatcher.UrlDispatcher.resolve

    async def counting(self, request):  # type: ignore[no-untyped-def]
        seen.append(request.raw_path)
        return await original(self, request)

    monkeypatch.setattr(web_urldispatcher.UrlDispatcher, "resolve", counting)
    yield seen


def requests_total(gw: Gateway, route: str, code: int) -> int:
    return gw.state.metrics.counts.requests.get((route, str(code)), 0)


def slo_requests(gw: Gateway) -> int:
    return sum(m[0] for m in gw.state.rollup.minutes.rows.values())


def sla_received(gw: Gateway, site: uuid.UUID) -> int:
    app = gw.client.server.app
    assert app is not None
    return sum(c[0] for (s, _), c in app[SLA].buckets.rows.items() if s == site)


def counts(gw: Gateway, code: int, site: uuid.UUID) -> tuple[int, int, int]:
    """/api/sync's requests_total for `code`, the SLO rollup's requests, the site's SLA received."""
    return requests_total(gw, "/api/sync", code), slo_requests(gw), sla_received(gw, site)


async def test_ingest_routes_skip_the_router_and_everything_else_takes_it(
    gateway: Gateway, pool: asyncpg.Pool, resolves: list[str]
) -> None:
    _, key = await new_site(pool)
    r = await gateway.client.post("/api/sync", data=orjson.dumps(event()), headers=auth(key))
    assert r.status == 200, await r.text()
    r = await gateway.client.post(
        "/api/v1/events",
        data=orjson.dumps(CLOUDEVENT),
        headers={**auth(key), "Content-Type": "application/cloudevents+json"},
    )
    assert r.status == 204, await r.text()
    assert resolves == []  # both served before the router
    for method, path in (
        ("POST", "/api/sync" + ROUTER),
        ("POST", "/api/sync/"),
        ("GET", "/api/sync"),
        ("GET", "/healthz"),
    ):
        await gateway.client.request(method, path, data=orjson.dumps(event()), headers=auth(key))
    assert resolves == ["/api/sync" + ROUTER, "/api/sync/", "/api/sync", "/healthz"]
    r = await gateway.client.post(
        "/api/sync", data=orjson.dumps(event()), headers={**auth(key), "Expect": "100-continue"}
    )
    assert r.status == 200 and resolves[-1] == "/api/sync"  # Expect: the router's path answers it


async def test_each_answer_is_the_routers_with_the_same_metrics_and_rollups(
    gateway: Gateway, pool: asyncpg.Pool
) -> None:
    site, key = await new_site(pool)
    big = orjson.dumps({"events": [event()]}) + b" " * gateway.state.settings.max_body_bytes
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("200", b"", auth(key), 200),  # body filled in per request (a fresh event_id)
        ("400", b'{"event_id": "x"}', auth(key), 400),
        ("401", b"{}", {"Content-Type": "application/json"}, 401),
        ("415", b"{}", {**auth(key), "Content-Type": "text/plain"}, 415),
        ("413", big, auth(key), 413),
    ]
    for name, body, headers, code in cases:
        answers = []
        for suffix in ("", ROUTER):
            before = counts(gateway, code, site)
            data = body or orjson.dumps(event(f"same-{uuid.uuid4().hex}"))
            r = await gateway.client.post("/api/sync" + suffix, data=data, headers=headers)
            doc = await r.json()
            after = counts(gateway, code, site)
            counted_site = 0 if code == 401 else 1  # a request without a site is in no SLA row
            assert r.status == code, (name, suffix, doc)
            assert after == (before[0] + 1, before[1] + 1, before[2] + counted_site), (name, suffix)
            for result in doc.get("results", []):
                result["event_id"], result["receipt"] = "-", "-"  # differ by design
            skip = {"Date", "RateLimit-Remaining", "RateLimit-Reset", "Content-Length"}
            answers.append((doc, sorted((k, v) for k, v in r.headers.items() if k not in skip)))
        assert answers[0] == answers[1], name


async def test_an_unexpected_error_is_the_same_503_on_both_paths(
    gateway: Gateway, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = await new_site(pool)

    async def broken(*args: object) -> object:
        raise RuntimeError("planted")

    monkeypatch.setattr(gateway.state.publisher, "publish", broken)
    for suffix in ("", ROUTER):
        before = requests_total(gateway, "/api/sync", 503)
        r = await gateway.client.post("/api/sync" + suffix, data=orjson.dumps(event()), headers=auth(key))
        assert r.status == 503 and r.headers["Retry-After"] == "1", suffix
        assert (await r.json())["error"] == "unavailable"
        assert requests_total(gateway, "/api/sync", 503) == before + 1
