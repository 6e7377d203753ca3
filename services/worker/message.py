"""Decode one ingest-topic message (schemas/event.v1.json) into a record, or say why not.

The worker never trusts the topic: a message that is not JSON, not event.v1, or that
Postgres could not store (NUL in text) becomes a DeadLetter with a reason instead of
failing the batch forever.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property, lru_cache

import orjson

_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REQUIRED = ("v", "site_id", "event_id", "type", "occurred_at", "usage_month", "quantity",
             "received_at", "path", "gateway_status")
_REQUIRED_SET = frozenset(_REQUIRED)
_ALLOWED = _REQUIRED_SET | {"properties"}
_PATHS = frozenset({"kafka", "fallback"})
_STATUSES = frozenset({"accepted", "overlimit", "degraded", "fallback"})
MAX_QUANTITY = 1_000_000_000_000


@dataclass(frozen=True)
class IngestEvent:
    site_id: uuid.UUID
    event_id: str
    type: str
    occurred_at: datetime
    usage_month: date
    quantity: int
    properties: str | None  # JSON text, stored as jsonb
    received_at: datetime
    path: str
    partition: int
    offset: int
    raw: bytes = field(default=b"", repr=False)  # kept for a dead letter (e.g. unknown site)

    @cached_property  # looked up several times per event in a batch; frozen: never stale
    def key(self) -> tuple[uuid.UUID, str]:
        return (self.site_id, self.event_id)


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    site_id: str | None
    event_id: str | None
    reason: str
    payload: bytes


def _text(value: object, limit: int) -> str | None:
    """Printable text for a dead letter's columns: Postgres text cannot hold NUL."""
    return None if value is None else str(value)[:limit].replace("\x00", "\\0")


def _time(raw: object) -> datetime:
    if not isinstance(raw, str):
        raise ValueError("not a string")
    value = datetime.fromisoformat(raw)
    if value.tzinfo is UTC:  # the gateway's form: nothing to convert
        return value
    if value.tzinfo is None:
        raise ValueError("no UTC offset")
    return value.astimezone(UTC)


# A batch carries a handful of sites and months: parse each text once (errors are not cached).
@lru_cache(maxsize=4096)
def _site_id(raw: str) -> uuid.UUID:
    return uuid.UUID(raw)


@lru_cache(maxsize=256)
def _month(raw: str) -> date:
    return date.fromisoformat(raw)


def _problem(doc: dict[str, object]) -> str | None:
    keys = doc.keys()
    if not keys >= _REQUIRED_SET:
        return f"missing {', '.join(k for k in _REQUIRED if k not in doc)}"
    if not keys <= _ALLOWED:
        return f"unknown fields {', '.join(sorted(set(doc) - _ALLOWED))}"
    if doc["v"] != 1:
        return f"unsupported v={doc['v']!r}"
    if not isinstance(doc["event_id"], str) or not _EVENT_ID.fullmatch(doc["event_id"]):
        return "bad event_id"
    t = doc["type"]
    if not isinstance(t, str) or not 1 <= len(t) <= 64 or "\x00" in t:
        return "bad type"
    q = doc["quantity"]
    if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= MAX_QUANTITY:
        return "bad quantity"
    if doc["path"] not in _PATHS:
        return "bad path"
    if doc["gateway_status"] not in _STATUSES:
        return "bad gateway_status"
    props = doc.get("properties")
    if props is not None and not isinstance(props, dict):
        return "properties is not an object"
    return None


def decode(value: bytes | None, partition: int, offset: int) -> IngestEvent | DeadLetter:
    raw = value or b""

    def dead(reason: str, doc: dict[str, object] | None = None) -> DeadLetter:
        return DeadLetter(partition, offset, _text(doc.get("site_id") if doc else None, 64),
                          _text(doc.get("event_id") if doc else None, 128), reason, raw)

    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return dead("not JSON")
    if not isinstance(doc, dict):
        return dead("not a JSON object")
    problem = _problem(doc)
    if problem:
        return dead(problem, doc)
    props = doc.get("properties")
    props_text = orjson.dumps(props).decode() if props is not None else None
    if props_text is not None and "\\u0000" in props_text:
        return dead("NUL in properties (Postgres jsonb cannot store it)", doc)
    try:
        site_id = _site_id(str(doc["site_id"]))
        occurred_at = _time(doc["occurred_at"])
        received_at = _time(doc["received_at"])
        usage_month = _month(str(doc["usage_month"]))
    except ValueError as exc:
        return dead(f"bad site_id, time or usage_month: {exc}", doc)
    if usage_month.day != 1 or usage_month != occurred_at.date().replace(day=1):
        return dead("usage_month is not occurred_at's UTC month", doc)
    return IngestEvent(site_id, str(doc["event_id"]), str(doc["type"]), occurred_at, usage_month,
                       int(doc["quantity"]), props_text, received_at, str(doc["path"]),
                       partition, offset, raw)
