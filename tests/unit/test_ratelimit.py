from __future__ import annotations

from opsmantik.gateway.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_refill_at_rate() -> None:
    clock = Clock()
    rl = RateLimiter(clock=clock)
    decisions = [rl.take("s", rate=2.0, burst=3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    denied = decisions[-1]
    assert denied.retry_after_s == 1 and denied.remaining == 0
    assert denied.headers()["Retry-After"] == "1" and denied.headers()["RateLimit-Limit"] == "3"
    clock.t += 0.5  # one token back at 2/s
    assert rl.take("s", 2.0, 3).allowed
    assert not rl.take("s", 2.0, 3).allowed


def test_sites_are_independent_and_bounded() -> None:
    rl = RateLimiter(clock=Clock(), max_sites=2)
    assert rl.take("a", 1.0, 1).allowed and not rl.take("a", 1.0, 1).allowed
    assert rl.take("b", 1.0, 1).allowed
    rl.take("c", 1.0, 1)
    assert len(rl._buckets) == 2


def test_allowed_has_no_retry_after_and_reset_counts_to_full() -> None:
    rl = RateLimiter(clock=Clock())
    d = rl.take("s", 10.0, 20)
    assert d.allowed and "Retry-After" not in d.headers()
    assert d.remaining == 19 and d.reset_s == 1


def _reference_take(buckets: dict[str, list[float]], site: str, now: float, rate: float, burst: int):  # type: ignore[no-untyped-def]
    """The token bucket as written before issue 28's rewrite of take(), for the differential test."""
    import math

    b = buckets.setdefault(site, [float(burst), now])
    b[0] = min(float(burst), b[0] + (now - b[1]) * rate)
    b[1] = now
    allowed = b[0] >= 1.0
    if allowed:
        b[0] -= 1.0
    retry = 0 if allowed else max(1, math.ceil((1.0 - b[0]) / rate))
    reset = math.ceil((burst - b[0]) / rate) if b[0] < burst else 0
    return (allowed, burst, int(b[0]), reset, retry)


def test_take_decides_as_the_reference_bucket_on_random_traffic() -> None:
    import random

    rng = random.Random(28)
    for _ in range(200):
        clock = Clock()
        rl = RateLimiter(clock=clock)
        ref: dict[str, list[float]] = {}
        rate, burst = rng.choice([0.01, 0.5, 2.0, 7.0, 1000.0]), rng.choice([1, 2, 3, 10, 2000])
        for _ in range(60):
            clock.t += rng.choice([0.0, 0.0, 0.001, 0.1, 0.5, 1.0, 3.7, 100.0])
            site = rng.choice("ab")
            got = rl.take(site, rate, burst)
            assert tuple(got) == _reference_take(ref, site, clock.t, rate, burst)
            assert got.headers() == {
                "RateLimit-Limit": str(burst),
                "RateLimit-Remaining": str(got.remaining),
                "RateLimit-Reset": str(got.reset_s),
                **({} if got.allowed else {"Retry-After": str(got.retry_after_s)}),
            }
