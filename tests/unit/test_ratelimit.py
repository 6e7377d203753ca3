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
