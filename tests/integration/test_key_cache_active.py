"""The gateway's key cache follows the keys in use (gateway/auth.py, issue 28): a refresh re-reads
the keys used in the last `active_for_s`, not every key the process has ever seen, and revocation
still takes effect within one refresh for a held key and at once for a dropped one."""

from __future__ import annotations

import asyncpg
from opsmantik.gateway.auth import KeyCache
from opsmantik.sites import hash_key, revoke_key

from tests.support.gateway import new_site

IDLE_KEYS = 300


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _revoke(pool: asyncpg.Pool, key: str) -> None:
    async with pool.acquire() as conn:
        key_id = await conn.fetchval("SELECT key_id FROM api_keys WHERE key_hash = $1", hash_key(key))
        assert await revoke_key(conn, key_id)


async def test_a_refresh_reads_the_active_keys_only(pool: asyncpg.Pool) -> None:
    clock = Clock()
    keys = KeyCache(pool, ttl_s=60, unknown_ttl_s=60, active_for_s=600, clock=clock)
    sites = [await new_site(pool) for _ in range(IDLE_KEYS + 2)]
    for _, key in sites:
        assert await keys.lookup(key) is not None
    await keys.refresh()
    assert keys.rows_read == IDLE_KEYS + 2  # all used within the window

    (_, hot), (_, warm), *idle = sites
    clock.now += 400
    assert await keys.lookup(hot) is not None
    assert await keys.lookup(warm) is not None
    await keys.refresh()  # nobody is idle for 600 s yet
    assert keys.rows_read == IDLE_KEYS + 2
    clock.now += 400  # the idle keys' last use is 800 s ago, hot and warm's 400 s
    assert await keys.lookup(hot) is not None
    await keys.refresh()
    assert keys.rows_read == 2, "a refresh re-read keys nobody used for 10 minutes"
    assert len(keys.known) == 2

    # A dropped key works again on its next request: one fresh lookup.
    lookups = keys.lookups
    assert await keys.lookup(idle[0][1]) is not None
    assert keys.lookups == lookups + 1
    # A dropped key revoked meanwhile is refused on its next request (read fresh).
    await _revoke(pool, idle[1][1])
    assert await keys.lookup(idle[1][1]) is None
    # A held key revoked is gone after the next refresh (one TTL, as before).
    await _revoke(pool, hot)
    assert await keys.lookup(hot) is not None  # served from the cache until the refresh
    await keys.refresh()
    assert await keys.lookup(hot) is None


async def test_a_header_hit_counts_as_use(pool: asyncpg.Pool) -> None:
    """Requests served from the header cache (`cached`) keep their key held."""
    clock = Clock()
    keys = KeyCache(pool, ttl_s=60, unknown_ttl_s=60, active_for_s=600, clock=clock)
    _, key = await new_site(pool)
    header = f"Bearer {key}"
    assert await keys.lookup(key) is not None
    keys.remember(header, key)
    for _ in range(3):
        clock.now += 500
        assert keys.cached(header) is not None
        await keys.refresh()
        assert keys.rows_read == 1
    clock.now += 700  # unused since
    await keys.refresh()
    assert keys.rows_read == 0 and keys.cached(header) is None
