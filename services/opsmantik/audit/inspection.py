"""One raw ingest-topic message → what the audit needs to account for it. Pure and total: any
key and value bytes (or None: a tombstone), any timestamp."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

import orjson

from opsmantik.audit.contract import gateway_problem


@dataclass(frozen=True)
class RawMessage:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None  # None: the broker had none


@dataclass(frozen=True)
class Inspected:
    partition: int
    offset: int
    site: str  # site_id from the body, else the Kafka key, else '' (for the per-site counts)
    site_id: uuid.UUID | None  # set when (site_id, event_id) can be looked up in the ledger
    event_id: str | None
    month: date  # UTC month of the message timestamp
    gateway_problem: str | None  # None: the gateway could have produced it (a dead letter = breach)

    @property
    def gateway_valid(self) -> bool:
        return self.gateway_problem is None

    @property
    def ledger_key(self) -> tuple[uuid.UUID, str] | None:
        return (self.site_id, self.event_id) if self.site_id is not None and self.event_id else None


def clean_text(value: object, limit: int) -> str:
    """Text Postgres can store: no NUL, no lone surrogates, bounded."""
    text = value if isinstance(value, str) else repr(value)
    return text[:limit].replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


def _month(timestamp_ms: int | None, now: datetime) -> date:
    try:
        t = datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms and timestamp_ms > 0 else now
    except (OverflowError, OSError, ValueError):
        t = now
    return t.date().replace(day=1)


def _uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def inspect(msg: RawMessage, now: datetime | None = None) -> Inspected:
    month = _month(msg.timestamp_ms, now or datetime.now(UTC))
    # The key is `site_id` or `site_id/<event_id>` (services/opsmantik/kafka/settings.py): its site part.
    key_text = clean_text(msg.key.decode("utf-8", "replace").split("/", 1)[0], 64) if msg.key else ""
    try:
        doc = orjson.loads(msg.value) if msg.value is not None else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return Inspected(
            msg.partition,
            msg.offset,
            key_text,
            None,
            None,
            month,
            "tombstone" if msg.value is None else "not a JSON object",
        )
    site_id = _uuid(doc.get("site_id"))
    raw_event = doc.get("event_id")
    event_id = clean_text(raw_event, 128) if isinstance(raw_event, str) and raw_event else None
    if event_id != raw_event:
        event_id = None  # not storable as it is: the worker cannot have ledgered it under this id
    site = str(site_id) if site_id is not None else key_text
    return Inspected(msg.partition, msg.offset, site, site_id, event_id, month, gateway_problem(doc))
