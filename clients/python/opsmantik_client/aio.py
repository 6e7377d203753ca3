"""AsyncClient: hand events over, they reach the gateway exactly once in the ledger.

    send/send_many ──▶ spill (SQLite, committed before returning) ──▶ memory window ─┐
                                      ▲ events past the window are read back ◀────┘
    pump: linger, cut batches (≤ max_events, ≤ max_bytes) ──▶ up to max_in_flight requests
    each request: 200 → results, delete from spill │ retryable → backoff, same bytes again
                  400/401/413/415 → rejected (per event where the gateway says which)

An event's id is fixed when it enters the spill, so every retry, and the replay after a
crash, carries the same event_id: the ledger stores it once whatever happens to the requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp

from opsmantik_client import _json
from opsmantik_client.batching import ENVELOPE_BYTES, encode_batch
from opsmantik_client.ids import uuid7_many
from opsmantik_client.model import (
    DROPPED,
    REJECTED,
    ClientConfig,
    Counters,
    MetricsHooks,
    Result,
    Ticket,
    default_spill_path,
)
from opsmantik_client.retry import Action, classify, pause_after_success, rejected_indexes, server_wait_s
from opsmantik_client.spill import MEMORY, Spill, SpillFull

log = logging.getLogger("opsmantik_client")

Item = tuple[int, str, bytes]  # (spill seq, event_id, serialised event)
_KEEP_HEADERS = ("retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


class NotDelivered(Exception):
    """The client was closed before the gateway answered for this event; it stays in the
    spill and is sent by the next client that opens the same spill."""


def sync_url(url: str) -> str:
    """Accept the gateway's base URL or the full /api/sync URL."""
    url = url.rstrip("/")
    return url if url.endswith("/api/sync") else url + "/api/sync"


class AsyncClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        config: ClientConfig | None = None,
        *,
        on_result: Callable[[Result], None] | None = None,
        hooks: MetricsHooks | None = None,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError("pass either config or keyword options, not both")
        cfg = config or ClientConfig(**options)
        problems = cfg.validate()
        if problems:
            raise ValueError("invalid client settings: " + "; ".join(problems))
        self.config = cfg
        self.url = sync_url(url)
        self.spill_path = cfg.spill_path or str(default_spill_path(self.url, api_key))
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._on_result = on_result
        self._hooks = hooks or MetricsHooks()
        self.counters = Counters()
        self._started = False
        self._closing = False
        self.pending_after_close = 0  # what close() left in the spill for the next start

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the spill (replaying what a previous run left) and start sending."""
        if self._started:
            return
        cfg = self.config
        self._spill = Spill(self.spill_path, cfg.spill_max_bytes, cfg.durable)
        self._loop = asyncio.get_running_loop()
        self._hot: deque[Item] = deque()  # newest events, in memory
        self._hot_bytes = 0
        self._ahead: deque[Item] = deque()  # rows read back from the spill
        # Events with seq >= _disk_from exist only in the spill (left by a previous run, or
        # over the memory window); None when everything unsent is in memory.
        self._disk_from: int | None = self._spill.first_seq
        self._disk_unread = self._spill.count
        if self._spill.count:
            self._count("spilled", self._spill.count)
            log.info("replaying %d events left in spill %s", self._spill.count, self.spill_path)
        self._waiters: dict[int, asyncio.Future[Result]] = {}
        self._wake = asyncio.Event()  # new events, a free slot, flush or close
        self._progress = asyncio.Event()  # the spill shrank
        self._slots = asyncio.Semaphore(cfg.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushing = 0
        self._pause_until = 0.0
        self._failing_since: float | None = None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=cfg.request_timeout_s),
            connector=aiohttp.TCPConnector(limit=cfg.max_in_flight, force_close=False),
        )
        self._pump_task = asyncio.create_task(self._pump(), name="opsmantik-client-pump")
        self._started = True

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything now (no linger) and wait until the spill is empty: every event
        answered (stored or rejected). False when `timeout` passed first."""
        await self.start()
        self._flushing += 1
        self._wake.set()
        try:
            return await self._wait(lambda: self._spill.count == 0, timeout)
        finally:
            self._flushing -= 1

    async def wait_pending(self, at_most: int, timeout: float | None = None) -> bool:
        """Wait until at most `at_most` events are unanswered: a reader that keeps only a few
        batches ahead of the gateway reuses its memory instead of growing it."""
        await self.start()
        return await self._wait(lambda: self._spill.count <= at_most or self._closing, timeout)

    async def close(self, timeout: float = 30.0) -> bool:
        """Flush for up to `timeout`, then stop. Events still unanswered stay in the spill for
        the next start (their tickets raise NotDelivered). True when nothing was left."""
        if not self._started or self._closing:
            return True
        done = await self.flush(timeout)
        self._closing = True
        self._wake.set()
        self._progress.set()  # callers blocked on a full spill give up
        for task in [*self._tasks, self._pump_task]:
            task.cancel()
        await asyncio.gather(*self._tasks, self._pump_task, return_exceptions=True)
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(NotDelivered("left in the spill for the next start"))
                fut.exception()  # retrieved: no "never retrieved" warning for unawaited tickets
        self._waiters.clear()
        await self._session.close()
        left = self.pending_after_close = self._spill.count
        self._spill.close()
        if left and self.spill_path == MEMORY:
            log.error("%d events never acknowledged are lost: the spill was in memory", left)
        elif left:
            log.warning("%d events left in spill %s; the next client on it sends them", left, self.spill_path)
        return done

    # ------------------------------------------------------------ the caller's side

    def checkpoint(self) -> dict[str, str]:
        """The `checkpoint` stored with the last send_many (committed with its events)."""
        return self._spill.meta()

    @property
    def pending(self) -> int:
        """Events handed over and not yet answered (the spill's row count)."""
        return self._spill.count if self._started else 0

    def outage_s(self) -> float:
        """Seconds since requests started failing (0 when the last one succeeded)."""
        return 0.0 if self._failing_since is None else time.monotonic() - self._failing_since

    async def send(self, event: Mapping[str, Any]) -> Ticket:
        return (await self.send_many([event]))[0]

    async def send_many(
        self, events: Iterable[Mapping[str, Any]], checkpoint: Mapping[str, str] | None = None
    ) -> list[Ticket]:
        """Hand events over: when this returns they are in the spill (a crash loses nothing).
        `checkpoint` (the caller's own position, e.g. a file offset) is committed in the same
        transaction, so a restarted producer knows exactly which input was handed over."""
        await self.start()
        if self._closing:
            raise RuntimeError("client is closed")
        items: list[tuple[str, bytes]] = []
        size = 0
        limits = self.config.limits
        events = events if isinstance(events, list) else list(events)
        ids = uuid7_many(len(events))  # cheaper in bulk than one at a time; unused ones cost little
        for ev, new_id in zip(events, ids, strict=True):
            if type(ev) is not dict and not isinstance(ev, Mapping):
                raise TypeError(f"an event is a JSON object (a mapping), not {type(ev).__name__}")
            eid = ev.get("event_id")
            if eid is None:
                eid = new_id
                ev = {**ev, "event_id": eid}
            elif type(eid) is not str:
                raise TypeError(f"event_id must be a string, not {type(eid).__name__}")
            body = _json.dumps(ev)
            if not limits.event_fits_alone(len(body)):
                raise ValueError(
                    f"event {eid}: {len(body)} bytes serialised; a request holds at most "
                    f"{limits.max_bytes - ENVELOPE_BYTES} bytes of events"
                )
            items.append((eid, body))
            size += len(body)
        if not items:
            if checkpoint:
                self._spill.append([], dict(checkpoint))
            return []
        if not await self._reserve(size):
            return self._drop(items)
        seq0 = self._spill.append(items, dict(checkpoint) if checkpoint else None)
        if self._disk_from is None and self._hot_bytes + size <= self.config.memory_max_bytes:
            self._hot.extend((seq0 + i, eid, body) for i, (eid, body) in enumerate(items))
            self._hot_bytes += size
        else:
            if self._disk_from is None:
                self._disk_from = seq0
            self._disk_unread += len(items)
            self._count("spilled", len(items))
        self._wake.set()
        if not self.config.receipts:
            return [Ticket(eid) for eid, _ in items]
        tickets = []
        for i, (eid, _) in enumerate(items):
            fut = self._loop.create_future()
            self._waiters[seq0 + i] = fut
            tickets.append(Ticket(eid, fut))
        return tickets

    async def _reserve(self, size: int) -> bool:
        """Back-pressure: room in the spill for `size` bytes, or the caller's choice."""
        spill = self._spill
        if spill.room_for(size):
            return True
        full = (
            f"spill {self.spill_path} holds {spill.bytes:,} of {spill.max_bytes:,} bytes "
            f"({spill.count:,} events not yet acknowledged)"
        )
        if size > spill.max_bytes:
            raise SpillFull(f"{size:,} bytes of events exceed the whole spill: {full}")
        if self.config.on_full == "raise":
            raise SpillFull(full)
        if self.config.on_full == "drop":
            return False
        if await self._wait(lambda: spill.room_for(size) or self._closing, self.config.block_timeout_s):
            if self._closing:
                raise RuntimeError("client is closed")
            return True
        raise SpillFull(f"still full after {self.config.block_timeout_s} s: {full}")

    def _drop(self, items: list[tuple[str, bytes]]) -> list[Ticket]:
        self._count("dropped", len(items))
        tickets = []
        for eid, body in items:
            res = Result(eid, DROPPED, error="spill full (on_full=drop)", body=body)
            self._callback(res)
            fut = self._loop.create_future() if self.config.receipts else None
            if fut is not None:
                fut.set_result(res)
            tickets.append(Ticket(eid, fut))
        return tickets

    async def _wait(self, done: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            self._progress.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), left)
            except TimeoutError:
                return done()
        return True

    # ------------------------------------------------------------ the sending side

    def _queued(self) -> int:
        return len(self._hot) + len(self._ahead) + self._disk_unread

    def _batch_ready(self) -> bool:
        lim = self.config.limits
        return (
            self._flushing > 0
            or self._closing
            or self._disk_unread > 0
            or bool(self._ahead)
            or len(self._hot) >= lim.max_events
            or self._hot_bytes >= lim.max_bytes
        )

    async def _pump(self) -> None:
        linger = self.config.limits.linger_s
        while True:
            while self._queued() == 0:
                self._wake.clear()
                await self._wake.wait()
            deadline = time.monotonic() + linger
            while not self._batch_ready() and (left := deadline - time.monotonic()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
            await self._slots.acquire()
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                await asyncio.sleep(0)  # a free semaphore does not yield: let others run
                continue
            task = asyncio.create_task(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take_batch(self) -> list[Item]:
        """The next events in spill order, as many as fit in one request."""
        lim = self.config.limits
        items: list[Item] = []
        size = ENVELOPE_BYTES
        while len(items) < lim.max_events:
            if self._hot:
                src = self._hot
            else:
                if not self._ahead and self._disk_from is not None:
                    rows = self._spill.read(self._disk_from, lim.max_events)
                    if rows:
                        self._disk_from = rows[-1].seq + 1
                        self._disk_unread = max(0, self._disk_unread - len(rows))
                        self._ahead.extend((r.seq, r.event_id, r.body) for r in rows)
                    else:
                        self._disk_from, self._disk_unread = None, 0
                elif self._disk_from is None:
                    self._disk_unread = 0  # nothing can be on disk only: never spin on a stale count
                if not self._ahead:
                    break
                src = self._ahead
            item = src[0]
            extra = len(item[2]) + (1 if items else 0)
            if items and size + extra > lim.max_bytes:
                break
            src.popleft()
            if src is self._hot:
                self._hot_bytes -= len(item[2])
            size += extra
            items.append(item)
        return items

    async def _run_batch(self, batch: list[Item]) -> None:
        try:
            await self._deliver(batch)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not lose events: they stay in the spill
            log.exception("delivering a batch failed; its %d events stay in the spill", len(batch))
        finally:
            self._slots.release()
            self._wake.set()

    async def _post(self, payload: bytes) -> tuple[int | None, dict[str, str], bytes]:
        self.counters.requests += 1
        try:
            async with self._session.post(self.url, data=payload, headers=self._headers) as resp:
                data = await resp.read()
                headers = {k.lower(): v for k, v in resp.headers.items() if k.lower() in _KEEP_HEADERS}
                return resp.status, headers, data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.debug("request failed: %r", exc)
            return None, {}, b""

    async def _deliver(self, batch: list[Item]) -> None:
        payload = encode_batch([it[2] for it in batch])
        attempt = 0
        while True:
            now = time.monotonic()
            if self._pause_until > now:
                await asyncio.sleep(self._pause_until - now)
            status, headers, data = await self._post(payload)
            action = classify(status)
            if action is Action.DONE:
                results = self._results(data, len(batch))
                if results is not None:
                    self._failing_since = None
                    self._stored(batch, results)
                    pause = pause_after_success(headers)
                    if pause:
                        self._pause_until = max(self._pause_until, time.monotonic() + pause)
                    return
                action = Action.RETRY  # a 2xx we cannot read (a proxy?): re-sending is safe
            if action is Action.RETRY:
                attempt += 1
                self.counters.failures += 1
                self._count("retried", len(batch))
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                delay = self.config.backoff.delay(attempt, headers)
                if server_wait_s(headers) is not None:  # the server spoke for every request
                    self._pause_until = max(self._pause_until, time.monotonic() + delay)
                await asyncio.sleep(delay)
                continue
            assert status is not None
            if action is Action.SPLIT and len(batch) > 1:
                mid = len(batch) // 2
                await self._deliver(batch[:mid])
                await self._deliver(batch[mid:])
                return
            body = self._body(data)
            per_event = rejected_indexes(len(batch), body) if status == 400 else None
            if per_event is not None:
                self._rejected([batch[i] for i in per_event], status, [per_event[i] for i in per_event])
                rest = [it for i, it in enumerate(batch) if i not in per_event]
                if rest:  # a 400 stores nothing: the valid events go again, at once
                    await self._deliver(rest)
                return
            reason = self._reason(status, body)
            self._rejected(batch, status, [reason] * len(batch))
            return

    @staticmethod
    def _body(data: bytes) -> object:
        try:
            return _json.loads(data) if data else None
        except (_json.DecodeError, ValueError):
            return None

    @staticmethod
    def _reason(status: int, body: object) -> str:
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            msg = body.get("message")
            return f"{status} {body['error']}" + (f": {msg}" if isinstance(msg, str) else "")
        return f"HTTP {status}"

    def _results(self, data: bytes, n: int) -> list[dict[str, Any]] | None:
        body = self._body(data)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or len(results) != n:
            return None
        return results

    # ------------------------------------------------------------ answers

    def _stored(self, batch: list[Item], results: list[dict[str, Any]]) -> None:
        self._spill.remove([it[0] for it in batch], sum(len(it[2]) for it in batch))
        by_status = self.counters.by_status
        for (seq, eid, _), r in zip(batch, results, strict=True):
            status = r.get("status") or "accepted"
            by_status[status] = by_status.get(status, 0) + 1
            self._answer(seq, Result(eid, status, r.get("receipt"), None, 200))
        self._count("sent", len(batch))
        self._progress.set()

    def _rejected(self, items: list[Item], status: int, reasons: list[str]) -> None:
        self._spill.remove([it[0] for it in items], sum(len(it[2]) for it in items))
        by_status = self.counters.by_status
        by_status[REJECTED] = by_status.get(REJECTED, 0) + len(items)
        for (seq, eid, body), reason in zip(items, reasons, strict=True):
            self._answer(seq, Result(eid, REJECTED, None, reason, status, body))
        self._count("rejected", len(items))
        self._progress.set()

    def _answer(self, seq: int, res: Result) -> None:
        self._callback(res)
        fut = self._waiters.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_result(res)

    def _callback(self, res: Result) -> None:
        if self._on_result is None:
            return
        try:
            self._on_result(res)
        except Exception:  # the caller's bug must not stop delivery
            log.exception("on_result callback raised")

    def _count(self, name: str, n: int) -> None:
        setattr(self.counters, name, getattr(self.counters, name) + n)
        getattr(self._hooks, name)(n)
