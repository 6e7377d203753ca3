"""OpsMantik producer client: `Client(url, api_key).send(event)` (or `AsyncClient`).

Exceptions:

    RuntimeError
    ├── SpillError
    │   ├── SpillLocked     another process uses this spill file
    │   └── SpillFull       the spill reached spill_max_bytes and on_full="raise"
    Exception
    └── NotDelivered        (a ticket's result) the client closed first; the event stays spilled
"""

from opsmantik_client.aio import AsyncClient, NotDelivered
from opsmantik_client.batching import BatchLimits
from opsmantik_client.ids import uuid7
from opsmantik_client.model import ClientConfig, Counters, MetricsHooks, Result, Ticket
from opsmantik_client.retry import Backoff
from opsmantik_client.spill import SpillError, SpillFull, SpillLocked
from opsmantik_client.sync import Client, SyncTicket

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
