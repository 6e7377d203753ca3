"""API keys → sites, from an in-memory cache so the Kafka path touches Postgres on no request.

A known key is served from the cache and re-checked in the background every TTL; when Postgres
is down the last known answer stands (known keys keep working). The cache holds the keys in use:
one not used for `ACTIVE_FOR_S` leaves it at the next refresh (and is looked up again, fresh, on
its next request), so a refresh reads the active keys' rows, not every key a long-lived process
has ever seen. A new key is looked up once (single flight); an unknown one is remembered as
unknown for `unknown_key_ttl_s`. Keys that do not even look like ours are refused without a
lookup, so a flood of garbage never reaches the DB.

Forged keys do look like ours, so a key must also carry its MAC (services/opsmantik/sites.py): a
tagged key whose tag does not verify is refused in memory ("bad_mac"). A key without a tag (issued
before the MAC, "legacy") is looked up only within the gateway's budget of unknown-key lookups
(`LookupBudget`, a token bucket): past it the answer is 429 without a query, so a flood of fresh
well-formed keys costs Postgres at most `unknown_key_lookups_per_s` per gateway process, whatever
the attacker's rate. Every refusal is counted by reason (`on_refused`); past a rate of refusals
each one is answered late (`RefusalPacer`), which slows a flood down to what a sleep costs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from opsmantik.errors import Unavailable
from opsmantik.gateway.sql import Q
from opsmantik.sites import Q as SITES_Q
from opsmantik.sites import hash_key, key_kind

log = logging.getLogger(__name__)
KEY_FORMAT = re.compile(r"omk_[A-Za-z0-9_-]{20,100}")
MAX_UNKNOWN = 50_000
MAX_LEGACY_INFLIGHT = 1  # concurrent lookups of untagged keys: the outbox keeps the rest of the pool
MAX_HEADERS = 100_000  # remembered Authorization headers (KeyCache.by_header)
# A key unused for this long leaves `known` (as the usage cache's sites do, gateway/quota.py): a
# steady sender is never re-read per request, and keys that stopped sending stop costing the
# refresh. Revocation is unaffected: a held key is re-read every TTL, a dropped one on its next use.
ACTIVE_FOR_S = 600.0


@dataclass(frozen=True)
class SiteAuth:
    site_id: uuid.UUID
    key_id: uuid.UUID
    monthly_quota: int | None
    hard_cap: int | None
    rate_per_s: float
    burst: int


class AuthUnavailable(Unavailable):
    """A key we have never seen, and Postgres cannot tell us about it (→ 503, retry is safe)."""


class LookupBudgetExhausted(Unavailable):
    """An untagged key we do not know, and this gateway spent its unknown-key lookups or cannot
    look it up right now (→ 429 with Retry-After)."""


class LookupBudget:
    """Token bucket: `rate_per_s` lookups a second, up to `burst` at once."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.at = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate_per_s)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class RefusalPacer:
    """Refusals answered at once up to `undelayed_per_s` a second (a misconfigured client learns
    fast); past that the gateway is being flooded and each refusal waits `delay_s` first. A
    sleeping answer costs the gateway almost nothing, and caps a closed-loop attacker at about
    connections / delay_s requests a second, so the flood's CPU stays off the legitimate path."""

    def __init__(self, undelayed_per_s: float, delay_s: float) -> None:
        self.free = LookupBudget(undelayed_per_s, max(1, int(undelayed_per_s)))
        self.delay_s = delay_s

    async def pause(self) -> None:
        if self.delay_s > 0 and not self.free.take():
            await asyncio.sleep(self.delay_s)


def _ignore(reason: str) -> None:
    pass


def bearer(header: str | None) -> str | None:
    """The credential of `Authorization: Bearer <credential>` (any case of "Bearer"), else None."""
    scheme, _, credential = (header or "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else None


def bearer_key(header: str | None) -> str | None:
    """The header's bearer credential when it has a site key's shape, else None."""
    key = bearer(header)
    return key if key is not None and KEY_FORMAT.fullmatch(key) else None


class KeyCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ttl_s: float,
        unknown_ttl_s: float,
        lookup_timeout_s: float = 2.0,
        *,
        secrets: tuple[str, ...] = (),
        legacy_keys: bool = True,
        budget: LookupBudget | None = None,
        on_refused: Callable[[str], None] = _ignore,
        pacer: RefusalPacer | None = None,
        active_for_s: float = ACTIVE_FOR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`secrets`: the MAC secrets a tagged key may verify under (empty: tags not checked, every
        key is treated as legacy); `budget`: unknown legacy-key lookups (None: unlimited)."""
        self.pool = pool
        self.ttl_s = ttl_s
        self.unknown_ttl_s = unknown_ttl_s
        self.lookup_timeout_s = lookup_timeout_s
        self.secrets = secrets
        self.legacy_keys = legacy_keys
        self.budget = budget
        self.on_refused = on_refused
        self.pacer = pacer or RefusalPacer(1.0, 0.0)
        self.lookups = 0  # database lookups of a single key, for the tests and the logs
        self.known: dict[bytes, SiteAuth] = {}
        self.active_for_s = active_for_s
        self.clock = clock
        # Keys served since the last refresh (a set add per request: no clock read on the hot
        # path), and per held key the refresh that last found it used (or its fetch).
        self.used: set[bytes] = set()
        self.used_at: dict[bytes, float] = {}
        self.rows_read = 0  # key rows the last refresh read (the test of "follows the active keys")
        # Authorization header → its key's digest, for headers whose key was found in `known`: a
        # hit skips parsing, the format check and SHA-256, then reads `known` exactly as a miss
        # does (a revoked or refreshed-away key is gone from `known`, so it misses and takes the
        # full path: format, MAC, budget, pacing).
        self.by_header: dict[str, bytes] = {}
        self.unknown: OrderedDict[bytes, float] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[SiteAuth | None]] = {}
        self._legacy_inflight = 0

    def cached(self, header: str | None) -> SiteAuth | None:
        """The site of an Authorization header remembered with a key still in `known`, else None."""
        digest = self.by_header.get(header) if header else None
        if digest is None:
            return None
        site = self.known.get(digest)
        if site is not None:
            self.used.add(digest)
        return site

    def remember(self, header: str, api_key: str) -> None:
        """After `lookup(api_key)` found the key: later requests with this exact header hit `cached`."""
        digest = hash_key(api_key)
        if digest in self.known:
            if len(self.by_header) >= MAX_HEADERS:
                self.by_header.clear()  # bounded: many distinct headers only cost a re-hash each
            self.by_header[header] = digest

    async def lookup(self, api_key: str) -> SiteAuth | None:
        digest = hash_key(api_key)
        site = self.known.get(digest)
        if site is not None:
            self.used.add(digest)
            return site
        kind = key_kind(api_key, self.secrets) if self.secrets else "legacy"
        if kind == "bad_mac":
            self.on_refused("bad_mac")
            return None
        if kind == "legacy" and not self.legacy_keys:
            self.on_refused("legacy_disabled")
            return None
        seen = self.unknown.get(digest)
        if seen is not None and time.monotonic() - seen < self.unknown_ttl_s:
            self.on_refused("unknown_cached")
            return None
        if kind == "legacy" and self.budget is not None:
            # An untagged key may be forged: it never costs more than the budget, never holds
            # more than MAX_LEGACY_INFLIGHT of the pool the outbox needs, and a lookup that
            # fails is a 429 (retry), not a 5xx an attacker could pour into the SLO.
            pending = self._inflight.get(digest)
            if pending is None and (self._legacy_inflight >= MAX_LEGACY_INFLIGHT or not self.budget.take()):
                self.on_refused("lookup_budget")
                raise LookupBudgetExhausted
            self._legacy_inflight += 1
            try:
                return await self._single_flight(digest)
            except AuthUnavailable:
                self.on_refused("lookup_failed")
                raise LookupBudgetExhausted from None
            finally:
                self._legacy_inflight -= 1
        return await self._single_flight(digest)

    async def _single_flight(self, digest: bytes) -> SiteAuth | None:
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[SiteAuth | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = fut
        try:
            site = await self._fetch(digest)
            fut.set_result(site)
            return site
        except Exception as exc:
            fut.set_exception(AuthUnavailable(str(exc)))
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise AuthUnavailable(type(exc).__name__) from None
        finally:
            del self._inflight[digest]

    async def _fetch(self, digest: bytes) -> SiteAuth | None:
        self.lookups += 1
        async with self.pool.acquire(timeout=self.lookup_timeout_s) as conn:
            row = await conn.fetchrow(SITES_Q["key_by_hash"], digest, timeout=self.lookup_timeout_s)
        if row is None:
            self.on_refused("unknown")
            self.unknown[digest] = time.monotonic()
            self.unknown.move_to_end(digest)
            while len(self.unknown) > MAX_UNKNOWN:
                self.unknown.popitem(last=False)
            return None
        site = SiteAuth(**dict(row))
        self.known[digest] = site
        self.used_at[digest] = self.clock()
        self.unknown.pop(digest, None)
        return site

    def drop_idle(self) -> None:
        """Forget the keys not used for `active_for_s` (their next request looks them up again)."""
        now = self.clock()
        for digest in self.used:
            self.used_at[digest] = now
        self.used.clear()
        for digest in [d for d in self.known if now - self.used_at.get(d, now) > self.active_for_s]:
            del self.known[digest]
            self.used_at.pop(digest, None)

    async def refresh(self) -> None:
        """Re-read every held key: revoked ones disappear, limits follow the site row. Idle keys
        are dropped first, so the read is of the keys in use, however many a process has seen."""
        self.drop_idle()
        digests = list(self.known)
        self.rows_read = 0
        if not digests:
            return
        async with self.pool.acquire(timeout=self.lookup_timeout_s) as conn:
            rows = await conn.fetch(Q["keys_by_hashes"], digests, timeout=self.lookup_timeout_s)
        self.rows_read = len(rows)
        fresh: dict[bytes, SiteAuth] = {}
        for r in rows:
            fields = dict(r)
            digest = bytes(fields.pop("key_hash"))
            fresh[digest] = SiteAuth(**fields)
        for digest in digests:
            if digest in fresh:
                self.known[digest] = fresh[digest]
            else:
                self.known.pop(digest, None)
                self.used_at.pop(digest, None)

    async def run(self) -> None:
        """Background refresher; failures keep the last known answers (Postgres may be down)."""
        while True:
            await asyncio.sleep(self.ttl_s)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving the cached keys
                log.warning(
                    "key cache refresh failed, keeping %d cached keys: %s",
                    len(self.known),
                    type(exc).__name__,
                )
