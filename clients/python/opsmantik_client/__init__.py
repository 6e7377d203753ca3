"""OpsMantik producer client: `Client(url, api_key).send(event)` (or `AsyncClient`).

Exceptions:

    RuntimeError
    ├── SpillError
    │   ├── SpillLocked     another process uses this spill file
    │   └── SpillFull       the spill reached spill_max_bytes and on_full="raise"
    Exception
    └── NotDelivered        (a ticket's result) the client closed first; the event stays spilled
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsmantik_client.aio import AsyncClient, NotDelivered
    from opsmantik_client.batching import BatchLimits
    from opsmantik_client.ids import uuid7
    from opsmantik_client.model import ClientConfig, Counters, MetricsHooks, Result, Ticket
    from opsmantik_client.retry import Backoff
    from opsmantik_client.spill import SpillError, SpillFull, SpillLocked
    from opsmantik_client.sync import Client, SyncTicket

# Where each name lives. Loaded on first use (PEP 562), so that importing one submodule, such as
# send_cli for the `opsmantik` command's parser, does not load aiohttp.
_HOME = {
    "AsyncClient": "aio",
    "NotDelivered": "aio",
    "BatchLimits": "batching",
    "uuid7": "ids",
    "ClientConfig": "model",
    "Counters": "model",
    "MetricsHooks": "model",
    "Result": "model",
    "Ticket": "model",
    "Backoff": "retry",
    "SpillError": "spill",
    "SpillFull": "spill",
    "SpillLocked": "spill",
    "Client": "sync",
    "SyncTicket": "sync",
}


_SUBMODULES = frozenset({"aio", "batching", "ids", "model", "retry", "spill", "sync", "send_cli"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # `opsmantik_client.sync` works without importing it first, as before
        return importlib.import_module(f"opsmantik_client.{name}")
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'opsmantik_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"opsmantik_client.{home}"), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


__all__ = [
    "AsyncClient",
    "Backoff",
    "BatchLimits",
    "Client",
    "ClientConfig",
    "Counters",
    "MetricsHooks",
    "NotDelivered",
    "Result",
    "SpillError",
    "SpillFull",
    "SpillLocked",
    "SyncTicket",
    "Ticket",
    "uuid7",
]
