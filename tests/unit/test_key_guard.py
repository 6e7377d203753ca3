"""Forged keys never reach Postgres at the attacker's rate: tagged keys are checked in memory, untagged
(legacy) unknown keys are looked up within a token bucket (services/opsmantik/gateway/auth.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import uuid
from typing import Any

import pytest
from opsmantik.config import LOCAL_KEY_SECRET, Settings, SettingsError
from opsmantik.gateway.auth import (
    MAX_LEGACY_INFLIGHT,
    KeyCache,
    LookupBudget,
    LookupBudgetExhausted,
    RefusalPacer,
    SiteAuth,
)
from opsmantik.sites import MAC_KEY_LEN, generate_key, hash_key, key_kind, key_tag

SECRET = "s" * 32
OTHER = "o" * 32
SITE = SiteAuth(uuid.uuid4(), uuid.uuid4(), None, None, 1000.0, 2000)


def legacy_key() -> str:
    return "omk_" + secrets.token_urlsafe(32)  # the format issued before the MAC


class FakeConn:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    async def fetchrow(self, _sql: str, digest: bytes, timeout: float) -> dict[str, Any] | None:
        self.pool.queries += 1
        site = self.pool.rows.get(digest)
        if site is None:
            return None
        return {f: getattr(site, f) for f in SiteAuth.__dataclass_fields__}


class FakePool:
    def __init__(self) -> None:
        self.rows: dict[bytes, SiteAuth] = {}
        self.queries = 0

    def acquire(self, timeout: float) -> Any:
        pool = self

        class Ctx:
            async def __aenter__(self) -> FakeConn:
                return FakeConn(pool)

            async def __aexit__(self, *exc: object) -> None:
                return None

        return Ctx()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def cache(pool: FakePool, budget: LookupBudget | None, **kw: Any) -> tuple[KeyCache, list[str]]:
    refused: list[str] = []
    c = KeyCache(pool, 60, 5, secrets=(SECRET,), budget=budget, on_refused=refused.append, **kw)  # type: ignore[arg-type]
    return c, refused


# ---------------------------------------------------------------- the MAC


def test_tagged_key_verifies_only_under_its_secret() -> None:
    key = generate_key(SECRET)
    assert len(key) == MAC_KEY_LEN and key.startswith("omk_")
    assert key_kind(key, (SECRET,)) == "mac"
    assert key_kind(key, (OTHER,)) == "bad_mac"
    assert key_kind(key, (OTHER, SECRET)) == "mac"  # rotation: the previous secret still verifies


def test_every_single_character_change_of_the_tag_is_refused() -> None:
    key = generate_key(SECRET)
    for i in range(len("omk_") + 22, len(key)):
        for c in "Aa0_-":
            forged = key[:i] + c + key[i + 1 :]
            if forged != key:
                assert key_kind(forged, (SECRET,)) == "bad_mac", (i, c)


def test_legacy_keys_never_look_tagged() -> None:
    # Issued keys were omk_ + token_urlsafe(32) = 47 characters; tagged ones are 48.
    for _ in range(200):
        assert key_kind(legacy_key(), (SECRET,)) == "legacy"
    assert key_kind("omk_" + "a" * 20, (SECRET,)) == "legacy"
    assert key_kind("omk_" + "a" * (MAC_KEY_LEN - 5), (SECRET,)) == "legacy"  # one short of the edge
    assert key_kind("omk_" + "a" * (MAC_KEY_LEN - 4), (SECRET,)) == "bad_mac"  # at the edge


def test_tag_is_hmac_sha256_of_the_random_part() -> None:
    key = generate_key(SECRET)
    assert key_tag(SECRET, key[4:26]) == key[26:]
    assert hash_key(key) == hashlib.sha256(key.encode()).digest()  # stored exactly like before


# ---------------------------------------------------------------- the budget


def test_budget_is_a_token_bucket_at_its_edges() -> None:
    clock = Clock()
    b = LookupBudget(10.0, 3, clock)
    assert [b.take() for _ in range(4)] == [True, True, True, False]  # the burst, then none
    clock.t += 0.099
    assert not b.take()  # 0.99 of a token
    clock.t += 0.001
    assert b.take()  # one token after 1/rate
    clock.t += 100
    assert [b.take() for _ in range(4)] == [True, True, True, False]  # refills to the burst only


async def test_forged_tagged_keys_never_query() -> None:
    pool = FakePool()
    c, refused = cache(pool, LookupBudget(1.0, 1))
    for _ in range(500):
        forged = "omk_" + secrets.token_urlsafe(16) + secrets.token_urlsafe(16)
        assert await c.lookup(forged) is None
    assert pool.queries == 0 and c.lookups == 0
    assert refused == ["bad_mac"] * 500


async def test_unknown_legacy_keys_past_the_budget_get_no_query() -> None:
    pool = FakePool()
    clock = Clock()
    c, refused = cache(pool, LookupBudget(5.0, 10, clock))
    exhausted = 0
    for _ in range(1000):
        try:
            assert await c.lookup(legacy_key()) is None
        except LookupBudgetExhausted:
            exhausted += 1
    assert pool.queries == 10 and exhausted == 990
    assert refused.count("unknown") == 10 and refused.count("lookup_budget") == 990
    clock.t += 1.0  # one second later: rate_per_s more lookups
    with pytest.raises(LookupBudgetExhausted):
        for _ in range(100):
            await c.lookup(legacy_key())
    assert pool.queries == 15


async def test_new_tagged_key_works_at_once_during_a_flood() -> None:
    pool = FakePool()
    clock = Clock()
    c, _ = cache(pool, LookupBudget(5.0, 10, clock))
    for _ in range(50):  # the budget is gone
        with contextlib.suppress(LookupBudgetExhausted):
            await c.lookup(legacy_key())
    key = generate_key(SECRET)
    pool.rows[hash_key(key)] = SITE
    assert await c.lookup(key) == SITE  # tagged keys do not spend the budget
    old = legacy_key()
    pool.rows[hash_key(old)] = SITE
    with pytest.raises(LookupBudgetExhausted):  # an uncached legacy key waits for the bucket
        await c.lookup(old)
    clock.t += 0.2
    assert await c.lookup(old) == SITE
    queries = pool.queries
    assert await c.lookup(old) == SITE and pool.queries == queries  # cached from now on


async def test_negative_cache_and_single_flight() -> None:
    pool = FakePool()
    c, refused = cache(pool, LookupBudget(1.0, 2))
    key = legacy_key()
    results = await asyncio.gather(*(c.lookup(key) for _ in range(20)))
    assert results == [None] * 20 and pool.queries == 1
    assert await c.lookup(key) is None and pool.queries == 1
    assert refused[-1] == "unknown_cached"


async def test_legacy_off_refuses_untagged_keys_in_memory() -> None:
    pool = FakePool()
    c, refused = cache(pool, None, legacy_keys=False)
    old = legacy_key()
    pool.rows[hash_key(old)] = SITE
    assert await c.lookup(old) is None and pool.queries == 0 and refused == ["legacy_disabled"]
    key = generate_key(SECRET)
    pool.rows[hash_key(key)] = SITE
    assert await c.lookup(key) == SITE


# ---------------------------------------------------------------- settings


def test_key_settings_validated_and_secret_never_in_repr() -> None:
    s = Settings.from_env({"OPSMANTIK_KEY_SECRET": "x" * 40})
    assert "x" * 40 not in repr(s) and LOCAL_KEY_SECRET not in repr(Settings())
    with_password = Settings.from_env({"OPSMANTIK_DATABASE_URL": "postgresql://u:hunter22@db:5432/x"})
    assert "hunter22" not in repr(with_password)
    with pytest.raises(SettingsError) as e:
        Settings.from_env(
            {
                "OPSMANTIK_KEY_SECRET": "x" * 15,
                "OPSMANTIK_KEY_SECRET_PREVIOUS": "short",
                "OPSMANTIK_LEGACY_KEYS": "maybe",
                "OPSMANTIK_UNKNOWN_KEY_LOOKUPS_PER_S": "0",
                "OPSMANTIK_UNKNOWN_KEY_LOOKUP_BURST": "0",
            }
        )
    text = str(e.value)
    for name in ("KEY_SECRET ", "KEY_SECRET_PREVIOUS", "LEGACY_KEYS", "LOOKUPS_PER_S", "LOOKUP_BURST"):
        assert name in text, name
    assert "x" * 15 not in text
    assert Settings.from_env({"OPSMANTIK_KEY_SECRET": "x" * 16}).key_secret == "x" * 16  # at the edge


class SlowPool(FakePool):
    """Lookups wait for `gate`; with `fail`, they raise like a pool that timed out."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.fail = fail

    def acquire(self, timeout: float) -> Any:
        pool = self

        class Ctx:
            async def __aenter__(self) -> FakeConn:
                await pool.gate.wait()
                if pool.fail:
                    raise TimeoutError
                return FakeConn(pool)

            async def __aexit__(self, *exc: object) -> None:
                return None

        return Ctx()


async def test_untagged_lookups_hold_at_most_one_connection() -> None:
    assert MAX_LEGACY_INFLIGHT == 1
    pool = SlowPool()
    c, refused = cache(pool, LookupBudget(1000.0, 1000))
    first = [asyncio.create_task(c.lookup(legacy_key()))]
    await asyncio.sleep(0)
    with pytest.raises(LookupBudgetExhausted):  # a second one while one is in flight, at once
        await asyncio.wait_for(c.lookup(legacy_key()), 1.0)
    key = generate_key(SECRET)  # tagged keys are not capped
    pool.rows[hash_key(key)] = SITE
    tagged = asyncio.create_task(c.lookup(key))
    pool.gate.set()
    assert await asyncio.gather(*first) == [None] and await tagged == SITE
    assert refused.count("lookup_budget") == 1
    assert await c.lookup(legacy_key()) is None  # the slots are free again


async def test_failed_untagged_lookup_is_a_429_and_a_tagged_one_a_503() -> None:
    from opsmantik.gateway.auth import AuthUnavailable

    pool = SlowPool(fail=True)
    pool.gate.set()
    c, refused = cache(pool, LookupBudget(1000.0, 1000))
    with pytest.raises(LookupBudgetExhausted):
        await c.lookup(legacy_key())
    assert refused == ["lookup_failed"]
    with pytest.raises(AuthUnavailable):
        await c.lookup(generate_key(SECRET))


async def test_refusals_are_paced_only_past_the_free_rate() -> None:
    pacer = RefusalPacer(5.0, 0.2)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(5):  # the free ones
        await pacer.pause()
    assert loop.time() - t0 < 0.1
    t0 = loop.time()
    await asyncio.gather(*(pacer.pause() for _ in range(20)))  # past it: every one waits, concurrently
    assert 0.2 <= loop.time() - t0 < 0.5
    off = RefusalPacer(1.0, 0.0)
    t0 = loop.time()
    for _ in range(50):
        await off.pause()
    assert loop.time() - t0 < 0.1
