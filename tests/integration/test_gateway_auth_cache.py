"""The gateway's Authorization-header cache (gateway/auth.py KeyCache.by_header, issue 28): a
header seen with a known key skips parsing and hashing, and is checked against `known` exactly as
a miss is, so a revoked key is refused as soon as the refresh drops it."""

from __future__ import annotations

import asyncpg
import pytest
from opsmantik.gateway.auth import KeyCache
from opsmantik.sites import revoke_key

from tests.support import gateway as gateway_support
from tests.support.gateway import Gateway, auth, event, new_site

gateway = gateway_support.gateway  # the module-scoped fixture


async def _post(gw: Gateway, headers: dict[str, str]) -> int:
    async with gw.client.post("/api/sync", json=event(), headers=headers) as r:
        return r.status


async def test_a_seen_header_skips_the_lookup_and_a_revoked_key_is_refused(
    gateway: Gateway, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, key = await new_site(pool)
    headers = auth(key)
    assert await _post(gateway, headers) == 200  # the full path: format, digest, lookup
    keys = gateway.state.keys
    assert headers["Authorization"] in keys.by_header

    async def no_lookup(self: KeyCache, api_key: str) -> None:
        raise AssertionError("a remembered header must not reach lookup")

    with monkeypatch.context() as m:
        m.setattr(KeyCache, "lookup", no_lookup)
        assert await _post(gateway, headers) == 200  # the cache hit
        # Another spelling of the same key is a different header: it takes the full path.
        with pytest.raises(AssertionError):
            await keys.lookup(key)
    assert await _post(gateway, {**headers, "Authorization": f"bearer  {key}"}) == 200

    async with pool.acquire() as conn:
        key_id = await conn.fetchval("SELECT key_id FROM api_keys WHERE site_id = $1", site)
        assert await revoke_key(conn, key_id)
    await keys.refresh()  # what the background refresher does every TTL
    assert await _post(gateway, headers) == 401  # the remembered header finds no known key


async def test_malformed_and_unknown_headers_are_never_remembered(
    gateway: Gateway, pool: asyncpg.Pool
) -> None:
    keys = gateway.state.keys
    before = dict(keys.by_header)
    assert (
        await _post(gateway, {"Authorization": "Bearer not-a-key", "Content-Type": "application/json"}) == 401
    )
    _, key = await new_site(pool)
    assert await _post(gateway, auth(key[:-1] + ("A" if key[-1] != "A" else "B"))) == 401
    assert keys.by_header == before
