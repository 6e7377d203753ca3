"""The request parts the read routes share (gateway/state.py): a bounded JSON-object body and
`?limit=`. The dashboard's token mint and the meters' POST query read their bodies through
json_object; the dashboard's and the event lookup's lists read `limit` through limit_param. And
the one reader of `Authorization: Bearer` (gateway/auth.py)."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import orjson
from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request
from opsmantik.gateway.auth import bearer, bearer_key
from opsmantik.gateway.state import json_object, limit_param


def _request(body: bytes = b"", query: str = "") -> web.Request:
    payload = streams.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    return make_mocked_request("POST", f"/x{query}", payload=payload)


def _answer(response: web.Response) -> tuple[int, Any]:
    assert isinstance(response.body, bytes)
    return response.status, orjson.loads(response.body)


async def test_json_object() -> None:
    assert await json_object(_request(b'{"a": 1}'), 8, "{}") == {"a": 1}
    assert await json_object(_request(b""), 8, "{}") == {}
    too_big = await json_object(_request(b'{"a": 12}'), 8, "{}")  # 9 bytes
    assert isinstance(too_big, web.Response)
    assert _answer(too_big) == (413, {"error": "payload_too_large", "message": "the body is at most 8 bytes"})
    for body in (b"{", b"[1]", b'"x"'):
        refused = await json_object(_request(body), 8, '{"a": 1}')
        assert isinstance(refused, web.Response)
        status, doc = _answer(refused)
        assert status == 400 and doc["details"][0]["field"] == "body", doc
        assert doc["details"][0]["message"].endswith('send {"a": 1}'), doc


async def test_limit_param() -> None:
    assert limit_param(_request(), 20, 100) == 20
    assert limit_param(_request(query="?limit=100"), 20, 100) == 100
    for raw in ("0", "101", "-1", "1.5", "x", "", "١"):  # "١": an Arabic-Indic digit, isdigit() but not ASCII
        refused = limit_param(_request(query=f"?limit={raw}"), 20, 100)
        assert isinstance(refused, web.Response), raw
        status, doc = _answer(refused)
        assert status == 400 and doc["details"][0]["field"] == "limit", (raw, doc)


def test_bearer() -> None:
    """The one reader of `Authorization: Bearer <credential>` (site keys, operator and portal tokens)."""
    key = "omk_" + "a" * 30
    assert bearer(f"Bearer {key}") == key and bearer(f"bEARER  {key} ") == key
    assert bearer("Bearer omo_x") == "omo_x" and bearer("Bearer ") == "" and bearer("Bearer") == ""
    for header in (None, "", f"Basic {key}", key):
        assert bearer(header) is None, header
    assert bearer_key(f"Bearer {key}") == key
    assert bearer_key("Bearer omo_x") is None and bearer_key("Bearer ") is None and bearer_key(None) is None
