"""Decode one ingest-topic message (schemas/event.v1.json) into a record, or say why not.

Total: any bytes at all give an IngestEvent or a DeadLetter, never an exception. The event's
own fields are judged by opsmantik.events.field_errors, the rules the gateway validated the
request with, so what the gateway accepts the worker ledgers, field for field. A message that
is not JSON or not event.v1 becomes a DeadLetter with a reason instead of failing the batch.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import orjson
from asyncpg.pgproto.pgproto import UUID as PgUUID

from opsmantik.events import (
    CLOUDEVENT_ID,
    EVENT_ID,
    MAX_AGE,
    MAX_AHEAD,
    MAX_PROPERTIES_BYTES,
    MAX_QUANTITY,
    MAX_TYPE_CHARS,
    field_errors,
    has_nul,
    parse_time,
    valid_subject,
)

log = logging.getLogger("opsmantik.worker")
_REQUIRED = (
    "v",
    "site_id",
    "event_id",
    "type",
    "occurred_at",
    "usage_month",
    "quantity",
    "received_at",
    "path",
    "gateway_status",
)
_REQUIRED_SET = frozenset(_REQUIRED)
_N_REQUIRED = len(_REQUIRED)
_ALLOWED = _REQUIRED_SET | {"properties", "subject"}  # subject: events.field_errors judges it
_PATHS = ("kafka", "fallback")
_STATUSES = ("accepted", "overlimit", "degraded", "fallback")


class IngestEvent(NamedTuple):
    """A decoded event. A NamedTuple, not a frozen dataclass: built once per event, its
    construction is one C call instead of one object.__setattr__ per field (issue 22)."""

    site_id: uuid.UUID
    event_id: str
    type: str
    occurred_us: int  # occurred_at in microseconds since 1970-01-01 UTC (the batch's COPY)
    usage_month: date
    quantity: int
    properties: str | None  # JSON text, stored as jsonb
    received_us: int  # received_at in microseconds since 1970-01-01 UTC (the batch's COPY)
    path: str
    partition: int
    offset: int
    subject: str | None  # the site's own customer (1-256 characters), stored in the ledger
    # The fields up to `subject` are the columns of the batch's COPY, in this order
    # (worker/ledger.py BATCH_COLUMNS, ledger.sql batch_table): keep them in step. The times go
    # as integers: asyncpg's timestamptz encoder costs about 1.7 µs a value, an int8 0.2.
    raw: bytes  # kept for a dead letter (e.g. unknown site)
    key: tuple[uuid.UUID, str]  # (site_id, event_id): looked up several times per event
    occurred_at: datetime
    received_at: datetime

    def __repr__(self) -> str:  # without raw (a dead letter's payload is logged elsewhere)
        return f"IngestEvent(site_id={self.site_id}, event_id={self.event_id!r}, offset={self.offset})"


@dataclass(frozen=True)
class DeadLetter:
    """Its text columns are always storable: built only through `dead_letter`."""

    partition: int
    offset: int
    site_id: str | None
    event_id: str | None
    reason: str
    payload: bytes


def storable(value: object, limit: int) -> str | None:
    """Text Postgres accepts whatever came in: no NUL, valid UTF-8, at most `limit` characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    text = text[:limit].replace("\x00", "\\0")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def dead_letter(
    partition: int, offset: int, reason: str, payload: bytes, site_id: object = None, event_id: object = None
) -> DeadLetter:
    return DeadLetter(
        partition,
        offset,
        storable(site_id, 64),
        storable(event_id, 128),
        storable(reason, 500) or "unknown",
        payload,
    )


# A batch carries a handful of sites and months: parse each text once (errors are not cached).
# uuid.UUID judges the text; the value kept is asyncpg's UUID (a uuid.UUID, equal and hashing
# alike), whose hash is cached in C and which asyncpg encodes with a copy: an event's key is
# hashed several times per batch, and uuid.UUID's __hash__ and .bytes are Python code.
@lru_cache(maxsize=4096)
def _site_id(raw: str) -> uuid.UUID:
    return PgUUID(uuid.UUID(raw).bytes)  # type: ignore[no-any-return]


@lru_cache(maxsize=256)
def _month(raw: str) -> date:
    return date.fromisoformat(raw)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# The gateway's rule, which the ledger's dedupe scope rests on (db/partitions.py): occurred_at within
# 35 days before and 5 minutes after received_at (the gateway's clock), with the audit's slack
# (audit/contract.py). received_at: a clock reading from 1970 on, and far enough from year 9999's
# end that the months after it exist (a date in January of year 1 reaches Postgres as -infinity).
WINDOW_SLACK = timedelta(seconds=1)
BEFORE_US = (MAX_AGE + WINDOW_SLACK) // MICROSECOND
AFTER_US = (MAX_AHEAD + WINDOW_SLACK) // MICROSECOND
RECEIVED_FROM_US, RECEIVED_UNTIL_US = 0, (datetime(9999, 11, 1, tzinfo=UTC) - EPOCH) // MICROSECOND


def micros(t: datetime) -> int:
    """Microseconds since 1970-01-01 UTC (exact: integer arithmetic)."""
    return (t - EPOCH) // MICROSECOND


# received_at is the gateway's, one value for every event of a request: parse it once.
@lru_cache(maxsize=1024)
def _received_time(raw: str) -> tuple[datetime, int] | None:
    t = parse_time(raw)
    return None if t is None else (t, micros(t))


# The one shape the gateway writes (events.iso: UTC, microseconds, "+00:00"). For it,
# datetime.fromisoformat (C) gives what parse_time gives (the same fields, the same UTC
# instant, ValueError exactly where parse_time's datetime() raises); any other text, and any
# text the fast path refuses, is judged by parse_time itself.
_GATEWAY_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", re.ASCII)


def _event_time(raw: str) -> datetime | None:
    if _GATEWAY_TIME.fullmatch(raw):
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:  # "+00:00" gives the UTC singleton itself (CPython's datetime): no copy to make
            return value if value.tzinfo is UTC else value.replace(tzinfo=UTC)
    return parse_time(raw)


def _properties(props: object) -> tuple[str | None, bytes]:
    """events.properties_problem's rules, returning the one serialisation they made: it is also
    the text the ledger stores (one orjson.dumps per event, not two)."""
    if not isinstance(props, dict):
        return "must be an object or null", b""
    encoded = orjson.dumps(props)
    if len(encoded) > MAX_PROPERTIES_BYTES:
        return f"{len(encoded)} bytes serialised; at most {MAX_PROPERTIES_BYTES}", encoded
    if b"\\u0000" in encoded and has_nul(props):
        return "strings must not contain NUL (\\u0000)", encoded
    return None, encoded


def _fields_pass(doc: dict[str, Any]) -> bool:
    """True only where events.field_errors finds nothing (its rules, for exact types: what orjson
    gives), for a doc holding every required field and no properties; False sends the doc to
    field_errors itself, which then names every error. One expression instead of a list and a
    call per rule (tests/unit/test_worker_message.py compares the two on random docs)."""
    event_id, kind, quantity, subject = doc["event_id"], doc["type"], doc["quantity"], doc.get("subject")
    return (
        type(event_id) is str
        and type(kind) is str
        and type(quantity) is int
        and 1 <= quantity <= MAX_QUANTITY
        and 1 <= len(kind) <= MAX_TYPE_CHARS
        and "\x00" not in kind
        and (subject is None or valid_subject(subject))
        and (EVENT_ID.fullmatch(event_id) is not None or CLOUDEVENT_ID.fullmatch(event_id) is not None)
    )


def _problem(doc: dict[str, object]) -> tuple[str | None, bytes | None]:
    """Why the message is not a valid event.v1 (None if it is), and its properties serialised."""
    keys = doc.keys()
    # Every required field and no other but the optional ones: within _ALLOWED, and as many as
    # the required ones once the optional ones present are taken off (one set check, not two).
    if not (keys <= _ALLOWED and len(doc) - ("properties" in doc) - ("subject" in doc) == _N_REQUIRED):
        if not keys >= _REQUIRED_SET:
            return f"missing {', '.join(k for k in _REQUIRED if k not in doc)}", None
        return f"unknown fields {', '.join(sorted(set(doc) - _ALLOWED))}", None
    v = doc["v"]
    if type(v) is not int or v != 1:
        return f"unsupported v={v!r}", None
    # properties are judged here, not by field_errors: their one serialisation is both the
    # check (size, NUL: events.properties_problem's rules) and the text stored (_decode).
    props = doc.pop("properties", None)
    errors = [] if _fields_pass(doc) else field_errors(doc)
    encoded = None
    if props is not None:
        doc["properties"] = props
        problem, encoded = _properties(props)
        if problem:
            errors.append(("properties", problem))
    if errors:
        return "; ".join(f"{f}: {m}" for f, m in errors), None
    # `in` a tuple of str: a value of any other JSON type equals none of them (isinstance first
    # is the same test)
    if doc["path"] not in _PATHS:
        return "bad path", None
    if doc["gateway_status"] not in _STATUSES:
        return "bad gateway_status", None
    if not (
        type(doc["site_id"]) is str
        and type(doc["occurred_at"]) is str
        and type(doc["received_at"]) is str
        and type(doc["usage_month"]) is str
    ):  # orjson makes exact types; the loop names the first that is not a string
        for name in ("site_id", "occurred_at", "received_at", "usage_month"):
            if not isinstance(doc[name], str):
                return f"{name} is not a string", None
    return None, encoded


def _dead(doc: dict[str, Any], partition: int, offset: int, reason: str, raw: bytes) -> DeadLetter:
    return dead_letter(partition, offset, reason, raw, doc.get("site_id"), doc.get("event_id"))


def _decode(raw: bytes, partition: int, offset: int) -> IngestEvent | DeadLetter:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return dead_letter(partition, offset, "not JSON", raw)
    if not isinstance(doc, dict):
        return dead_letter(partition, offset, "not a JSON object", raw)
    problem, encoded = _problem(doc)
    if problem:
        return _dead(doc, partition, offset, problem, raw)
    occurred_at = _event_time(doc["occurred_at"])
    received = _received_time(doc["received_at"])
    if occurred_at is None or received is None:
        reason = "occurred_at or received_at is not an RFC 3339 time with an offset"
        return _dead(doc, partition, offset, reason, raw)
    try:
        site_id = _site_id(doc["site_id"])
        usage_month = _month(doc["usage_month"])
    except ValueError as exc:
        return _dead(doc, partition, offset, f"bad site_id or usage_month: {exc}", raw)
    # usage_month == occurred_at.date().replace(day=1), without making the two dates
    if usage_month.day != 1 or usage_month.month != occurred_at.month or usage_month.year != occurred_at.year:
        return _dead(doc, partition, offset, "usage_month is not occurred_at's UTC month", raw)
    received_us = received[1]
    if not RECEIVED_FROM_US <= received_us < RECEIVED_UNTIL_US:
        return _dead(doc, partition, offset, "received_at is not between 1970-01-01 and 9999-11-01", raw)
    occurred_us = (occurred_at - EPOCH) // MICROSECOND  # micros(occurred_at), without the call
    if not received_us - BEFORE_US <= occurred_us <= received_us + AFTER_US:
        reason = "occurred_at is not within 35 days before and 5 minutes after received_at"
        return _dead(doc, partition, offset, reason, raw)
    props_text = encoded.decode() if encoded is not None else None
    event_id = doc["event_id"]
    return _new_event(  # IngestEvent(...) without the NamedTuple's Python __new__
        IngestEvent,
        (
            site_id,
            event_id,
            doc["type"],
            occurred_us,
            usage_month,
            doc["quantity"],
            props_text,
            received_us,
            doc["path"],
            partition,
            offset,
            doc.get("subject"),
            raw,
            (site_id, event_id),
            occurred_at,
            received[0],
        ),
    )


_new_event = tuple.__new__


def decode(value: bytes | None, partition: int, offset: int) -> IngestEvent | DeadLetter:
    """Never raises: a bug in the rules above dead-letters the one message, not the batch."""
    raw = value or b""
    try:
        return _decode(raw, partition, offset)
    except Exception as exc:
        log.exception("decoder error at partition %d offset %d", partition, offset)
        return dead_letter(partition, offset, f"decoder error: {exc!r}", raw)
