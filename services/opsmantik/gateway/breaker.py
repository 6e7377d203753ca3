"""A circuit breaker deciding fast whether the broker is "unavailable".

closed: produce to Kafka. A failure (librdkafka transport error, delivery error or our delivery
deadline) opens it at once: one missed deadline already cost a request its latency budget.
open: every request goes to the outbox until `cooldown_s` passed, then half_open: the next request
is the probe (still bounded by the delivery deadline, so it falls back if the broker is still
gone); its success closes the breaker, its failure reopens it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass
class Breaker:
    cooldown_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    state: str = CLOSED
    opened_at: float = 0.0
    probing: bool = False
    trips: int = 0
    last_reason: str = ""
    _listeners: list[Callable[[str], None]] = field(default_factory=list)

    def allow_kafka(self) -> bool:
        """True when this request may use Kafka (closed, or it is the half-open probe)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self.clock() - self.opened_at >= self.cooldown_s:
            self._set(HALF_OPEN)
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.probing = False
        if self.state != CLOSED:
            self._set(CLOSED)

    def failure(self, reason: str) -> None:
        self.probing = False
        self.last_reason = reason
        self.opened_at = self.clock()
        if self.state != OPEN:
            self.trips += 1
            self._set(OPEN)

    def on_change(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def _set(self, state: str) -> None:
        self.state = state
        for listener in self._listeners:
            listener(state)
