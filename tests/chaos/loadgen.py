"""The load generator: several concurrent clients send distinct events to the gateways and
retry, with the same event_ids, on 429, 503, timeouts and connection errors — what a careful
producer does. It records every event id it sent, every one it got a 200 for (with the
per-event outcome), each attempt's result kind and the latency of every answered attempt.

Deterministic in what it sends for a given seed (batch sizes, quantities, ids); the timing of
answers is of course the system's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import orjson

RETRY_STATUSES = frozenset({429, 503})
ATTEMPT_TIMEOUT_S = 5.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0


@dataclass(frozen=True)
class Attempt:
    t: float  # monotonic time the attempt ended
    kind: str  # "200", "429", "503", "500", "timeout", "conn_error", ...
    latency_s: float


@dataclass(frozen=True)
class BadAck:
    """A 200 whose body did not list every sent event_id, in order (DESIGN.md: one entry per
    event in request order). The 200 acknowledged them all the same."""

    t: float
    sent: list[str]
    listed: list[str] | None  # the body's event_ids; None: no results list at all


@dataclass
class LoadRecord:
    """Everything the checker needs from the client side."""

    sent: set[str] = field(default_factory=set)
    acked: dict[str, str] = field(default_factory=dict)  # event_id -> outcome in the 200 ("missing")
    attempts: list[Attempt] = field(default_factory=list)
    unacked_at_end: int = 0  # batches still retrying when the load stopped
    bad_200: list[BadAck] = field(default_factory=list)

    def acknowledge(self, t: float, sent: list[str], payload: object) -> None:
        """A 200 acknowledges every sent event, whatever its body says; a body that does not list
        them all in order is recorded (the checker fails the run on it)."""
        results = payload.get("results") if isinstance(payload, dict) else None
        rows = [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
        listed = [str(r.get("event_id")) for r in rows] if isinstance(results, list) else None
        if listed != sent or len(rows) != len(results or []):
            self.bad_200.append(BadAck(t, sent, listed))
        status = {str(r.get("event_id")): str(r.get("status")) for r in rows}
        for eid in sent:
            self.acked[eid] = status.get(eid, "missing")

    def outcome_counts(self) -> Counter[str]:
        return Counter(self.acked.values())

    def attempt_counts(self) -> Counter[str]:
        return Counter(a.kind for a in self.attempts)


@dataclass(frozen=True)
class LoadConfig:
    api_key: str
    gateway_urls: list[str]
    seed: int
    clients: int = 4
    events_per_s: float = 150.0  # total, all clients
    max_batch: int = 5


def make_event(event_id: str, rng: random.Random) -> dict[str, object]:
    return {
        "event_id": event_id,
        "type": "api_call",
        "occurred_at": datetime.now(UTC).isoformat(),
        "quantity": rng.randint(1, 5),
        "properties": {"chaos": True},
    }


class LoadGenerator:
    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.record = LoadRecord()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # force_close: a killed gateway must not leave us reusing dead pooled sockets forever.
        conn = aiohttp.TCPConnector(limit=0, force_close=True)
        self._session = aiohttp.ClientSession(connector=conn)
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.config.clients)]

    async def stop(self, grace_s: float = 15.0) -> LoadRecord:
        """Stop sending new batches; give in-flight batches `grace_s` to get their 200."""
        self._stop.set()
        _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        return self.record

    async def _client(self, index: int) -> None:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{index}")
        per_client_rate = cfg.events_per_s / cfg.clients
        gateway = index % len(cfg.gateway_urls)
        n = 0
        while not self._stop.is_set():
            size = rng.randint(1, cfg.max_batch)
            ids = [f"s{cfg.seed}-c{index}-{n + i}" for i in range(size)]
            n += size
            batch = [make_event(eid, rng) for eid in ids]
            self.record.sent.update(ids)
            started = time.monotonic()
            gateway = await self._send_until_acked(batch, gateway, rng)
            # Pace to the target rate; a slow answer eats into the pause, never adds to it.
            pause = size / per_client_rate - (time.monotonic() - started)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)

    async def _send_until_acked(
        self, batch: list[dict[str, object]], gateway: int, rng: random.Random
    ) -> int:
        """Retry the same batch (same event_ids) until a 200 or a non-retryable answer.
        Returns the gateway index to use next (rotated on connection errors)."""
        assert self._session is not None
        urls = self.config.gateway_urls
        headers = {"Authorization": f"Bearer {self.config.api_key}"}
        body = {"events": batch}
        backoff = BACKOFF_MIN_S
        stopping_deadline: float | None = None
        while True:
            t0 = time.monotonic()
            try:
                async with self._session.post(
                    urls[gateway] + "/api/sync",
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S),
                ) as r:
                    status = r.status
                    raw = await r.read() if status == 200 else b""
                kind = str(status)
            except TimeoutError:
                status, raw, kind = 0, b"", "timeout"
            except (aiohttp.ClientError, OSError, ValueError):
                status, raw, kind = 0, b"", "conn_error"
            t1 = time.monotonic()
            self.record.attempts.append(Attempt(t1, kind, t1 - t0))
            if status == 200:
                try:
                    payload = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    payload = None
                self.record.acknowledge(t1, [str(e["event_id"]) for e in batch], payload)
                return gateway
            if status != 0 and status not in RETRY_STATUSES and status < 500:
                return gateway  # a 4xx other than 429: not retryable, the checker reports it
            if kind == "conn_error" and len(urls) > 1:
                gateway = (gateway + 1) % len(urls)
            if self._stop.is_set():
                # After the load stops, in-flight batches keep trying for a while: their events
                # may already be in Kafka, and an ack is what lets the checker hold us to them.
                stopping_deadline = stopping_deadline or time.monotonic() + 10.0
                if time.monotonic() > stopping_deadline:
                    self.record.unacked_at_end += 1
                    return gateway
            await asyncio.sleep(backoff * (0.5 + rng.random()))
            backoff = min(backoff * 2, BACKOFF_MAX_S)
