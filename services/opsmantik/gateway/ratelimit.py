"""Per-site token bucket: security, counted in requests (DESIGN.md "Limits and quotas")."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple


class Decision(NamedTuple):
    allowed: bool
    limit: int  # the burst: RateLimit-Limit
    remaining: int  # whole tokens left: RateLimit-Remaining
    reset_s: int  # seconds until the bucket is full again: RateLimit-Reset
    retry_after_s: int  # seconds until one token is back (0 when allowed): Retry-After

    def headers(self) -> dict[str, str]:
        h = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after_s)
        return h


@dataclass(slots=True)
class Bucket:
    rate: float
    burst: int
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    clock: Callable[[], float] = time.monotonic
    max_sites: int = 100_000  # bounded memory: idle buckets (full anyway) are dropped first
    _buckets: dict[object, Bucket] = field(default_factory=dict)

    def take(self, site: object, rate: float, burst: int, cost: float = 1.0) -> Decision:
        now = self.clock()
        b = self._buckets.get(site)
        if b is None:
            if len(self._buckets) >= self.max_sites:
                self._buckets.pop(next(iter(self._buckets)))
            b = self._buckets[site] = Bucket(rate, burst, float(burst), now)
        # Limits follow the site row (refreshed with the key cache).
        b.rate, b.burst = rate, burst
        tokens = b.tokens + (now - b.updated) * rate
        if tokens >= burst:
            tokens = float(burst)
        b.updated = now
        if tokens >= cost:
            b.tokens = tokens = tokens - cost
            reset = math.ceil((burst - tokens) / rate) if tokens < burst else 0
            return Decision(True, burst, int(tokens), reset, 0)
        b.tokens = tokens
        reset = math.ceil((burst - tokens) / rate) if tokens < burst else 0
        return Decision(False, burst, int(tokens), reset, max(1, math.ceil((cost - tokens) / rate)))
