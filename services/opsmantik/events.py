"""The ingest event: request body bytes → validated records, and a record → its Kafka message.

Pure (no I/O, the clock is passed in), so every rule of docs/design.md's event table is unit-tested at
its edge. A batch is all-or-nothing: `parse_request` returns either every event or every error,
each error naming the event index and the field.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson

EVENT_FIELDS = frozenset({"event_id", "type", "occurred_at", "quantity", "properties", "subject"})
REQUIRED = ("event_id", "type", "occurred_at")
EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)
# The ledger event_id POST /api/v1/events derives from a CloudEvent's (source, id)
# (services/opsmantik/gateway/cloudevents.py): `~` is outside EVENT_ID's alphabet, so no /api/sync
# event can collide with a CloudEvent. Valid on the topic; refused by /api/sync (validate_event).
CLOUDEVENT_ID = re.compile(r"ce~[0-9a-f]{64}", re.ASCII)
# RFC 3339 date-time with a mandatory offset (a naive time is ambiguous for billing).
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # \d must not match other scripts' digits
)
MAX_TYPE_CHARS = 64
# subject: the site's own customer (OpenMeter's subject; a CloudEvent's `subject`), optional.
# 256 characters as CloudEvents' subject already had (gateway/cloudevents.py); no NUL (Postgres
# text cannot hold it: the worker stores it in ingest_idempotency.subject).
MAX_SUBJECT_CHARS = 256
MAX_QUANTITY = 1_000_000_000_000
MAX_PROPERTIES_BYTES = 16 * 1024  # orjson's compact serialisation
# orjson serialises at most 254 levels, and a message holds properties one level down: deeper
# properties could not be written (a TypeError, a 500, before this rule).
MAX_PROPERTIES_DEPTH = 253
MAX_AGE = timedelta(days=35)
MAX_AHEAD = timedelta(minutes=5)


@dataclass(frozen=True)
class Limits:
    max_events: int = 1000
    max_age: timedelta = MAX_AGE
    max_ahead: timedelta = MAX_AHEAD


@dataclass(frozen=True)
class FieldError:
    index: int | None  # None: the body as a whole
    field: str | None
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    occurred_at: datetime  # UTC
    quantity: int
    properties: dict[str, Any] | None
    subject: str | None = None  # None: no subject (the message then carries no `subject` key)
    # The message's event part, serialised by the batch fast path (`_common_events`): the bytes
    # `"event_id":…,"type":…,"occurred_at":…,"usage_month":…,"quantity":…,"properties":…` exactly
    # as to_messages' dict would serialise them (tests/unit/test_gateway_batch_fast_path.py), so
    # the message is spliced, not rebuilt. None: to_messages serialises the fields. Not a field of
    # the event's identity (compare=False): a copy without it is the same event.
    wire: bytes | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def usage_month(self) -> date:
        return self.occurred_at.date().replace(day=1)


@dataclass(frozen=True)
class Parsed:
    """Exactly one of: events (valid batch), errors (400), too_many (413).

    The same event_id twice in one batch is one event: `distinct` holds the first of each id, in
    request order, and `slots[i]` is the index in `distinct` of the request's i-th event, so both
    are answered and only the first is stored."""

    events: list[Event]
    errors: list[FieldError]
    too_many: bool = False
    distinct: list[Event] = dataclasses.field(default_factory=list)
    slots: list[int] = dataclasses.field(default_factory=list)


def _parsed(events: list[Event], distinct: list[Event], slots: list[int]) -> Parsed:
    """Parsed(events, [], distinct=distinct, slots=slots) without the frozen dataclass's __init__
    (five object.__setattr__ calls and two default factories: about 2 µs a request, issue 28)."""
    parsed = _new(Parsed)
    _set(
        parsed,
        "__dict__",
        {"events": events, "errors": [], "too_many": False, "distinct": distinct, "slots": slots},
    )
    return parsed


_new, _set = object.__new__, object.__setattr__


def _valid(events: list[Event]) -> Parsed:
    if len(events) == 1:  # a single event: no id twice
        return _parsed(events, events, [0])
    if len({e.event_id for e in events}) == len(events):  # the common case: no id twice
        return _parsed(events, list(events), list(range(len(events))))
    first: dict[str, int] = {}
    distinct: list[Event] = []
    slots: list[int] = []
    for e in events:
        slot = first.setdefault(e.event_id, len(distinct))
        if slot == len(distinct):
            distinct.append(e)
        slots.append(slot)
    return Parsed(events, [], distinct=distinct, slots=slots)


def _fail(message: str, field: str | None = None) -> Parsed:
    return Parsed([], [FieldError(None, field, message)])


def parse_request(body: bytes, now: datetime, limits: Limits = Limits()) -> Parsed:
    """One event object, or {"events": [...]}; validated whole against `now` (UTC)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _fail(f"body is not valid JSON: {exc}")
    if not isinstance(doc, dict):
        return _fail('body must be a JSON object: one event or {"events": [...]}')
    if "events" in doc:
        extra = sorted(set(doc) - {"events"})
        if extra:
            return _fail(f'unknown top-level field {extra[0]!r} beside "events"', extra[0])
        items = doc["events"]
        if not isinstance(items, list):
            return _fail('"events" must be an array', "events")
        if not items:
            return _fail('"events" must not be empty', "events")
        if len(items) > limits.max_events:
            return Parsed(
                [], [FieldError(None, "events", f"{len(items)} events; at most {limits.max_events}")], True
            )
    else:
        items = [doc]
    events = _common_events(items, now, limits)  # the leading events of the common shape
    errors: list[FieldError] = []
    for i in range(len(events), len(items)):  # the rest (if any), one by one
        result = validate_event(items[i], now, limits)
        if isinstance(result, Event):
            events.append(result)
        else:
            errors.extend(FieldError(i, f, m) for f, m in result)
    return Parsed([], errors) if errors else _valid(events)


# common_time's shape as one pattern: `YYYY-MM-DDTHH:MM:SS[.f{1,9}]` + `Z` or `+00:00`, ASCII digits.
COMMON_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|\+00:00)", re.ASCII)


def _common_events(items: list[Any], now: datetime, limits: Limits) -> list[Event]:
    """`_common_event` over a batch in one loop: the events of `items` up to the first it does
    not accept (validate_event then decides that one and the rest). Like `_common_event` it only
    ever accepts what `validate_event_full` accepts, with the same Event; besides, it serialises
    each event's part of its message (`Event.wire`) from what validation already holds (the
    properties' orjson bytes, the time's text, once per distinct `occurred_at` of the batch).
    Compared with the full validator and to_messages' dict on random batches
    (tests/unit/test_gateway_batch_fast_path.py)."""
    out: list[Event] = []
    append = out.append
    latest, earliest = now + limits.max_ahead, now - limits.max_age
    fields, id_match, time_match = EVENT_FIELDS, EVENT_ID.fullmatch, COMMON_TIME.fullmatch
    dumps, from_iso, join = orjson.dumps, datetime.fromisoformat, b"".join
    new, set_dict = object.__new__, object.__setattr__
    times: dict[str, tuple[datetime, bytes]] = {}  # occurred_at text → (UTC time, its wire bytes)
    for item in items:
        if type(item) is not dict or not item.keys() <= fields:
            break
        get = item.get
        event_id, kind, raw = get("event_id"), get("type"), get("occurred_at")
        if type(event_id) is not str or type(kind) is not str or type(raw) is not str:
            break
        quantity = get("quantity", 1)
        if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
            break
        if not 1 <= len(kind) <= MAX_TYPE_CHARS or "\x00" in kind or id_match(event_id) is None:
            break
        subject = get("subject")
        if subject is not None and (
            type(subject) is not str or not 1 <= len(subject) <= MAX_SUBJECT_CHARS or "\x00" in subject
        ):
            break
        props = get("properties")
        if props is None:
            encoded = b"null"
        elif type(props) is dict:
            try:  # at the message's own depth (MAX_PROPERTIES_DEPTH); the same bytes as dumps(props)
                encoded = dumps({"p": props})[5:-1]
            except TypeError:  # too deep: validate_event words the error
                break
            # over the size, or a NUL maybe: validate_event decides (and words the error)
            if len(encoded) > MAX_PROPERTIES_BYTES or b"\\u0000" in encoded:
                break
        else:
            break
        seen = times.get(raw)
        if seen is None:
            if time_match(raw) is None:
                break
            try:
                occurred = from_iso(raw)
            except ValueError:
                break
            if occurred.tzinfo is not UTC:
                break
            # iso(occurred): the fraction is fromisoformat's (cut to microseconds, not rounded)
            text = f"{raw[:19]}.{occurred.microsecond:06d}+00:00"
            seen = times[raw] = (
                occurred,
                f',"occurred_at":"{text}","usage_month":"{text[:8]}01","quantity":'.encode(),
            )
        else:
            occurred = seen[0]
        if occurred > latest or occurred < earliest:
            break
        event = new(Event)
        set_dict(
            event,
            "__dict__",
            {
                "event_id": event_id,
                "type": kind,
                "occurred_at": occurred,
                "quantity": quantity,
                "properties": props,
                "subject": subject,
                # event_id is EVENT_ID's ASCII alphabet: nothing in it is escaped in JSON
                "wire": join(
                    (
                        b'"event_id":"',
                        event_id.encode(),
                        b'","type":',
                        dumps(kind),
                        seen[1],
                        b"1" if quantity == 1 else str(quantity).encode(),
                        b',"properties":',
                        encoded,
                    )
                ),
            },
        )
        append(event)
    return out


def validate_event(item: object, now: datetime, limits: Limits = Limits()) -> Event | list[tuple[str, str]]:
    """The event, or every (field, message) wrong with it."""
    fast = _common_event(item, now, limits)
    return fast if fast is not None else validate_event_full(item, now, limits)


def _common_event(item: object, now: datetime, limits: Limits) -> Event | None:
    """The event when it is valid and of the common shape (exact str fields, an int quantity or
    none, a UTC time as `common_time` reads it), else None and `validate_event_full` decides. It
    only ever accepts, so every error still comes from the full validator; the two are compared
    on random events (tests/unit/test_events_fast_path.py). Half the full path's cost: no
    per-field error list, no regex for the time."""
    if type(item) is not dict or not item.keys() <= EVENT_FIELDS:
        return None
    event_id, kind, raw = item.get("event_id"), item.get("type"), item.get("occurred_at")
    if type(event_id) is not str or type(kind) is not str or type(raw) is not str:
        return None
    quantity = item.get("quantity", 1)
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        return None
    if not 1 <= len(kind) <= MAX_TYPE_CHARS or "\x00" in kind or not EVENT_ID.fullmatch(event_id):
        return None
    subject, props = item.get("subject"), item.get("properties")
    if subject is not None and not valid_subject(subject):
        return None
    if props is not None and properties_problem(props) is not None:
        return None
    occurred = common_time(raw)
    if occurred is None or occurred > now + limits.max_ahead or occurred < now - limits.max_age:
        return None
    return Event(event_id, kind, occurred, quantity, props, subject)


def validate_event_full(
    item: object, now: datetime, limits: Limits = Limits()
) -> Event | list[tuple[str, str]]:
    """Every rule, every error: the validator for whatever `_common_event` does not accept."""
    if not isinstance(item, dict):
        return [("", "an event must be a JSON object")]
    quantity = item.get("quantity")
    # A request's JSON has one number type: 5.0 is the integer 5 (JSON Schema's "integer" agrees;
    # exact, as the maximum 1e12 is far below 2**53); 5.5 is not. Normalised here, so the topic
    # and the worker's stricter rules only ever see an int.
    if type(quantity) is float and quantity.is_integer() and 1 <= quantity <= MAX_QUANTITY:
        item = {**item, "quantity": int(quantity)}
    errors: list[tuple[str, str]] = []
    if not item.keys() <= EVENT_FIELDS:
        for name in sorted(set(item) - EVENT_FIELDS):
            errors.append((name[:64], "unknown field"))
    for name in REQUIRED:
        if name not in item:
            errors.append((name, "required"))

    errors.extend(field_errors(item))
    event_id, kind = item.get("event_id"), item.get("type")
    if isinstance(event_id, str) and CLOUDEVENT_ID.fullmatch(event_id):
        errors.append(("event_id", "must be 1-128 characters of [A-Za-z0-9._:-]"))

    occurred: datetime | None = None
    if "occurred_at" in item:
        raw = item["occurred_at"]
        occurred = parse_time(raw) if isinstance(raw, str) else None
        if occurred is None:
            errors.append(("occurred_at", "must be an RFC 3339 date-time with an offset"))
        elif occurred > now + limits.max_ahead:
            errors.append(("occurred_at", "more than 5 minutes in the future"))
        elif occurred < now - limits.max_age:
            errors.append(("occurred_at", "older than 35 days"))

    if errors:
        return errors
    assert isinstance(event_id, str) and isinstance(kind, str) and occurred is not None
    return Event(
        event_id, kind, occurred, item.get("quantity", 1), item.get("properties"), item.get("subject")
    )


def field_errors(item: dict[str, Any]) -> list[tuple[str, str]]:
    """The rules for event_id, type, quantity and properties: the one definition the gateway
    validates requests with and the worker validates topic messages with, so whatever the
    gateway accepts the worker ledgers, field for field (occurred_at's window is the gateway's
    alone: it is judged against the time the request arrived)."""
    errors: list[tuple[str, str]] = []
    event_id = item.get("event_id")
    if "event_id" in item and not (
        isinstance(event_id, str) and (EVENT_ID.fullmatch(event_id) or CLOUDEVENT_ID.fullmatch(event_id))
    ):
        errors.append(("event_id", "must be 1-128 characters of [A-Za-z0-9._:-]"))
    kind = item.get("type")
    if "type" in item and not (
        isinstance(kind, str) and 1 <= len(kind) <= MAX_TYPE_CHARS and "\x00" not in kind
    ):
        errors.append(("type", f"must be a string of 1-{MAX_TYPE_CHARS} characters without NUL"))
    quantity = item.get("quantity", 1)
    if not (type(quantity) is int and 1 <= quantity <= MAX_QUANTITY):
        errors.append(("quantity", f"must be an integer from 1 to {MAX_QUANTITY}"))
    subject = item.get("subject")
    if subject is not None and not valid_subject(subject):
        errors.append(("subject", SUBJECT_RULE))
    props = item.get("properties")
    if props is not None:
        problem = properties_problem(props)
        if problem:
            errors.append(("properties", problem))
    return errors


SUBJECT_RULE = f"must be a string of 1-{MAX_SUBJECT_CHARS} characters without NUL, or null"


def valid_subject(subject: object) -> bool:
    return isinstance(subject, str) and 1 <= len(subject) <= MAX_SUBJECT_CHARS and "\x00" not in subject


def properties_problem(props: object) -> str | None:
    if not isinstance(props, dict):
        return "must be an object or null"
    encoded = serialised(props)
    if encoded is None:
        return f"nested more than {MAX_PROPERTIES_DEPTH} levels deep"
    if len(encoded) > MAX_PROPERTIES_BYTES:
        return f"{len(encoded)} bytes serialised; at most {MAX_PROPERTIES_BYTES}"
    # Postgres text and jsonb cannot hold NUL: accepting it would make a poison message.
    if b"\\u0000" in encoded and has_nul(props):
        return "strings must not contain NUL (\\u0000)"
    return None


def serialised(props: object) -> bytes | None:
    """orjson's bytes of properties, or None when they nest deeper than a message can hold."""
    try:
        return orjson.dumps({"p": props})[5:-1]  # `{"p":` … `}`: one level down, as in a message
    except TypeError:  # orjson's recursion limit
        return None


def has_nul(value: object) -> bool:
    stack = [value]  # iterative: JSON may nest ~1000 deep
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def common_time(raw: str) -> datetime | None:
    """`YYYY-MM-DDTHH:MM:SS[.f{1,9}]` + `Z` or `+00:00` (JavaScript's toISOString, Python's
    isoformat): the shape nearly every client sends, read by the C parser after a shape check;
    None for anything else (parse_time, the RFC 3339 reader, then decides)."""
    if raw[-1:] == "Z":
        frac = raw[19:-1]
    elif raw[-6:] == "+00:00":
        frac = raw[19:-6]
    else:
        return None
    if not (
        len(raw) >= 20
        and raw.isascii()
        and raw[4:5] == "-"
        and raw[7:8] == "-"
        and raw[10:11] == "T"
        and raw[13:14] == ":"
        and raw[16:17] == ":"
        and (raw[:4] + raw[5:7] + raw[8:10] + raw[11:13] + raw[14:16] + raw[17:19]).isdigit()
        and (frac == "" or (frac[0] == "." and 2 <= len(frac) <= 10 and frac[1:].isdigit()))
    ):
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value if value.tzinfo is UTC else None


def parse_time(raw: str) -> datetime | None:
    match = RFC3339.fullmatch(raw)
    if not match:
        return None
    y, mo, d, h, mi, s, frac, offset = match.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        if offset in ("Z", "z"):  # already UTC: no conversion
            return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro, tzinfo=UTC)
        sign = 1 if offset[0] == "+" else -1
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            return None
        tz = timezone(sign * timedelta(hours=oh, minutes=om))
        value = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro, tzinfo=tz)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def utc_text(ts: datetime) -> str:
    """iso(ts) for an aware time, about half its cost (datetime.isoformat with `timespec` and a
    tzinfo is slow): `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (tests/unit/test_events_fast_path.py)."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    # %-formatting: 1.7 µs on the bench machine against 3.3 for the f-string, 2.5 for isoformat
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00" % (  # noqa: UP031
        ts.year,
        ts.month,
        ts.day,
        ts.hour,
        ts.minute,
        ts.second,
        ts.microsecond,
    )


# to_messages' per-site message head, by site: str(UUID) is pure Python (issue 28)
_HEADS: dict[uuid.UUID, bytes] = {}
MAX_HEADS = 10_000


def iso(ts: datetime) -> str:
    if ts.tzinfo is UTC:  # parse_time's output: no conversion needed
        return ts.isoformat(timespec="microseconds")
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def to_message(
    event: Event, site_id: uuid.UUID, received_at: datetime, *, path: str, gateway_status: str
) -> bytes:
    """schemas/event.v1.json: the Kafka value and, with path "fallback", the outbox
    payload."""
    return to_messages([event], site_id, received_at, path=path, gateway_statuses=[gateway_status])[0]


def to_messages(
    events: Sequence[Event],
    site_id: uuid.UUID,
    received_at: datetime,
    *,
    path: str,
    gateway_statuses: Sequence[str],
) -> list[bytes]:
    """to_message for one request's events: the per-request parts (site_id, received_at, each
    status's tail) are formatted once; an event the batch fast path serialised (`Event.wire`) is
    spliced between them, any other is serialised field by field (the same bytes: the JSON of
    `doc` below, keys in that order; tests/unit/test_gateway_batch_fast_path.py)."""
    head = _HEADS.get(site_id)  # `{"v":1,"site_id":"…",`
    if head is None:
        if len(_HEADS) >= MAX_HEADS:
            _HEADS.clear()  # bounded: a site not cached only costs its head again
        head = _HEADS[site_id] = orjson.dumps({"v": 1, "site_id": str(site_id)})[:-1] + b","
    site: str | None = None  # str(site_id), for an event without its wire bytes
    received = utc_text(received_at)
    out = []
    dumps, join = orjson.dumps, b"".join
    tails: dict[str, bytes] = {}  # status → `,"received_at":…,"path":…,"gateway_status":…`
    for event, status in zip(events, gateway_statuses, strict=True):
        wire = event.wire
        if wire is not None:
            tail = tails.get(status)
            if tail is None:
                tail = tails[status] = (
                    b"," + dumps({"received_at": received, "path": path, "gateway_status": status})[1:-1]
                )
            if event.subject is None:
                out.append(join((head, wire, tail, b"}")))
            else:
                out.append(join((head, wire, tail, b',"subject":', dumps(event.subject), b"}")))
            continue
        if site is None:
            site = str(site_id)
        occurred = iso(event.occurred_at)
        doc = {
            "v": 1,
            "site_id": site,
            "event_id": event.event_id,
            "type": event.type,
            "occurred_at": occurred,
            "usage_month": occurred[:8] + "01",  # YYYY-MM-01 of the UTC time
            "quantity": event.quantity,
            "properties": event.properties,
            "received_at": received,
            "path": path,
            "gateway_status": status,
        }
        if event.subject is not None:  # absent, not null: a message without one is unchanged
            doc["subject"] = event.subject
        out.append(dumps(doc))
    return out
