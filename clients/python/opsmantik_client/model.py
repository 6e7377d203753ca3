"""What the caller sees: settings, one result per event, tickets, counters and metric hooks."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opsmantik_client.batching import BatchLimits
from opsmantik_client.retry import Backoff

# The gateway's outcomes for a stored event (the SLO's vocabulary), then the client's own.
STORED = ("accepted", "overlimit", "degraded", "fallback")
REJECTED = "rejected"  # the gateway refused the event for good (400/401/413/415): not stored
DROPPED = "dropped"  # only with on_full="drop": the caller chose to drop when the spill was full


@dataclass(slots=True)  # not frozen: a frozen __init__ costs twice as much, per event
class Result:
    event_id: str
    status: str  # one of STORED, REJECTED, DROPPED
    receipt: dict[str, Any] | None = None  # {"partition", "offset"} or {"outbox_id"}
    error: str | None = None  # why it was rejected or dropped
    http_status: int | None = None
    body: bytes | None = None  # the event as sent, only when rejected or dropped

    @property
    def ok(self) -> bool:
        return self.status in STORED


@dataclass
class Ticket:
    """One event handed to the client. `await ticket` (async) gives its Result."""

    event_id: str
    future: asyncio.Future[Result] | None = None

    def __await__(self):  # type: ignore[no-untyped-def]
        if self.future is None:
            raise RuntimeError("receipts are off (receipts=False): use on_result")
        return self.future.__await__()


class MetricsHooks:
    """Subclass and override to feed your metrics system; each is called with a count.
    `dropped` is only ever called when the caller chose on_full="drop"."""

    def sent(self, n: int) -> None: ...
    def retried(self, n: int) -> None: ...
    def spilled(self, n: int) -> None: ...
    def rejected(self, n: int) -> None: ...
    def dropped(self, n: int) -> None: ...


@dataclass
class Counters:
    """Running totals (since this client started)."""

    sent: int = 0  # events the gateway acknowledged (any stored outcome)
    retried: int = 0  # event re-sends after a retryable failure
    spilled: int = 0  # events held only on disk: over the memory window, or left by a previous run
    rejected: int = 0
    dropped: int = 0
    requests: int = 0
    failures: int = 0  # requests that got no answer or a retryable one
    by_status: dict[str, int] = field(default_factory=dict)


def default_spill_path(url: str, api_key: str) -> Path:
    """Per (url, key) under $XDG_STATE_HOME/opsmantik: a restarted producer finds its spill
    without being told. The file name is a hash; the key itself is never written to disk."""
    import hashlib

    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(f"{url}\n{api_key}".encode()).hexdigest()[:16]
    return state / "opsmantik" / f"spill-{digest}.sqlite"


@dataclass(frozen=True)
class ClientConfig:
    spill_path: str | None = None  # None: default_spill_path(url, key); ":memory:": no file
    spill_max_bytes: int = 256 * 1024 * 1024  # events' bytes; then on_full applies
    memory_max_bytes: int = 32 * 1024 * 1024  # events beyond this window are read back from the spill
    on_full: Literal["block", "raise", "drop"] = "block"
    block_timeout_s: float | None = None  # block at most this long, then raise SpillFull
    durable: bool = False  # fsync every spill commit (power-loss safe, slower)
    limits: BatchLimits = field(default_factory=BatchLimits)
    backoff: Backoff = field(default_factory=Backoff)
    max_in_flight: int = 4  # concurrent requests
    request_timeout_s: float = 10.0
    receipts: bool = True  # a future per event; turn off for bulk sends that use on_result

    def validate(self) -> list[str]:
        problems = self.limits.validate() + self.backoff.validate()
        if self.on_full not in ("block", "raise", "drop"):
            problems.append("on_full must be block, raise or drop")
        if self.spill_max_bytes < self.limits.max_bytes:
            problems.append("spill_max_bytes must hold at least one full batch")
        if self.memory_max_bytes < self.limits.max_bytes:
            problems.append("memory_max_bytes must hold at least one full batch")
        if self.max_in_flight < 1:
            problems.append("max_in_flight must be >= 1")
        if self.request_timeout_s <= 0:
            problems.append("request_timeout_s must be > 0")
        return problems
