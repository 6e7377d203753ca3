"""What the fuzzer found once, pinned by direct requests (a fuzzer may not draw the same case
again): a month the parser refuses is a 400 (never a 503 that invites retries forever), every 405
carries `Allow`, and /status?format= is an enum. Real Kafka and Postgres behind the gateway."""

from __future__ import annotations

import re

import asyncpg
import pytest

from tests.support import gateway as gateway_support
from tests.support.gateway import Gateway, auth, new_site

gateway = gateway_support.gateway

MONTH_ROUTES = ["/api/usage", "/api/billing/dispute-export"]


@pytest.mark.parametrize("route", MONTH_ROUTES)
async def test_month_edges(gateway: Gateway, pool: asyncpg.Pool, route: str) -> None:
    _, key = await new_site(pool)
    for month in ("0000-01", "10000-01", "2026-13", "2026-00", "2026-1", "", "２０２６-01"):
        r = await gateway.client.get(route, params={"month": month}, headers=auth(key))
        assert r.status == 400, (month, r.status, await r.text())
        body = await r.json()
        assert body["error"] == "invalid_request" and body["details"][0]["field"] == "month", body
    r = await gateway.client.get(route, headers=auth(key))  # missing
    assert r.status == 400
    for month in ("0001-01", "9999-12"):
        r = await gateway.client.get(route, params={"month": month}, headers=auth(key))
        assert r.status == 200, (month, await r.text())
        await r.read()


async def test_every_405_names_the_allowed_methods(gateway: Gateway) -> None:
    routes: dict[str, set[str]] = {}
    for r in gateway.client.app.router.routes():
        routes.setdefault(r.resource.canonical, set()).add(r.method)
    assert len(routes) >= 7
    for path, methods in routes.items():
        for method in ("PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "POST", "GET"):
            if method in methods:
                continue
            # A placeholder is sent as a value: aiohttp's {name} never matches a literal brace, so
            # the canonical path itself would be a 404 from no route, not the route's 405.
            r = await gateway.client.request(method, re.sub(r"\{[^}]+\}", "x", path))
            assert r.status == 405, (method, path, r.status)
            assert set(r.headers["Allow"].split(",")) == methods, (method, path, r.headers.get("Allow"))
            assert (await r.json())["error"] == "method_not_allowed"


async def test_status_format_is_an_enum(gateway: Gateway) -> None:
    for fmt in ("xml", "JSON", ""):
        r = await gateway.client.get("/status", params={"format": fmt})
        assert r.status == 400, (fmt, r.status)
        assert (await r.json())["details"][0]["field"] == "format"
    r = await gateway.client.get("/status", params={"format": "json"})
    assert r.status == 200 and r.content_type == "application/json"
    r = await gateway.client.get("/status", params={"format": "html"})  # the enum is [html, json]
    assert r.status == 200 and r.content_type == "text/html"
    r = await gateway.client.get("/status")
    assert r.status == 200 and r.content_type == "text/html"
