"""How many events go into one request: pure arithmetic, tested at its edges.

A request body is `{"events":[e1,e2,...]}`: its size is the envelope plus every event's
serialised bytes plus one comma between events, so the client knows it exactly before sending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ENVELOPE_BYTES = len(b'{"events":[]}')
GATEWAY_MAX_EVENTS = 1000
GATEWAY_MAX_BYTES = 1024 * 1024  # the gateway answers 413 above this (equal is fine)


@dataclass(frozen=True)
class BatchLimits:
    max_events: int = GATEWAY_MAX_EVENTS
    max_bytes: int = GATEWAY_MAX_BYTES
    linger_s: float = 0.02  # how long a non-full batch waits for company

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.max_events <= GATEWAY_MAX_EVENTS:
            problems.append(f"max_events must be 1..{GATEWAY_MAX_EVENTS}")
        if not ENVELOPE_BYTES + 2 <= self.max_bytes <= GATEWAY_MAX_BYTES:
            problems.append(f"max_bytes must be {ENVELOPE_BYTES + 2}..{GATEWAY_MAX_BYTES}")
        if self.linger_s < 0:
            problems.append("linger_s must be >= 0")
        return problems

    def request_bytes(self, sizes: Sequence[int]) -> int:
        return ENVELOPE_BYTES + sum(sizes) + max(0, len(sizes) - 1)

    def event_fits_alone(self, size: int) -> bool:
        """An event larger than this can never be sent: the caller hears at once."""
        return ENVELOPE_BYTES + size <= self.max_bytes

    def take(self, sizes: Sequence[int]) -> int:
        """How many events from the head of `sizes` fit in one request (at least 1 when any
        event is there, since a single event always fits once admitted)."""
        total = ENVELOPE_BYTES
        n = 0
        for size in sizes:
            if n == self.max_events:
                break
            extra = size + (1 if n else 0)
            if n and total + extra > self.max_bytes:
                break
            total += extra
            n += 1
        return n


def encode_batch(bodies: Sequence[bytes]) -> bytes:
    return b'{"events":[' + b",".join(bodies) + b"]}"
