"""Client: the blocking twin of AsyncClient, for code without an event loop.

It runs an AsyncClient on its own thread and event loop; send() returns once the event is in
the spill. `on_result` callbacks run on that thread. The client closes itself at interpreter
exit (atexit): what is unanswered by then stays in the spill for the next start.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from opsmantik_client.aio import AsyncClient
from opsmantik_client.model import ClientConfig, Counters, MetricsHooks, Result, Ticket

T = TypeVar("T")


@dataclass
class SyncTicket:
    event_id: str
    _ticket: Ticket
    _loop: asyncio.AbstractEventLoop

    def result(self, timeout: float | None = None) -> Result:
        """Block until the gateway answered for this event (or the client closed)."""

        async def wait() -> Result:
            return await self._ticket

        return asyncio.run_coroutine_threadsafe(wait(), self._loop).result(timeout)


class Client:
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
        self._aclient = AsyncClient(url, api_key, config, on_result=on_result, hooks=hooks, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opsmantik-client", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._call(self._aclient.start())
        except BaseException:
            self._stop_loop()
            raise
        atexit.register(self.close)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def counters(self) -> Counters:
        return self._aclient.counters

    @property
    def spill_path(self) -> str:
        return self._aclient.spill_path

    @property
    def pending(self) -> int:
        return self._aclient.pending

    def checkpoint(self) -> dict[str, str]:
        async def read() -> dict[str, str]:
            return self._aclient.checkpoint()

        return self._call(read())

    def send(self, event: Mapping[str, Any]) -> SyncTicket:
        return self.send_many([event])[0]

    def send_many(
        self, events: Iterable[Mapping[str, Any]], checkpoint: Mapping[str, str] | None = None
    ) -> list[SyncTicket]:
        tickets = self._call(self._aclient.send_many(list(events), checkpoint))
        return [SyncTicket(t.event_id, t, self._loop) for t in tickets]

    def flush(self, timeout: float | None = None) -> bool:
        return self._call(self._aclient.flush(timeout))

    def close(self, timeout: float = 30.0) -> bool:
        if self._closed:
            return True
        atexit.unregister(self.close)
        try:
            return self._call(self._aclient.close(timeout))
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
