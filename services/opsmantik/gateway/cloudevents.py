"""CloudEvents (JSON format, spec 1.0) → the ingest `Event`s of POST /api/v1/events.

Pure (no I/O, the clock is passed in), like services/opsmantik/events.py, whose limits and rules it
reuses: a CloudEvent becomes the same `Event` /api/sync makes, so everything after parsing
(quota, publish, outbox, worker, ledger) is shared. A batch is all-or-nothing: every event, or
every error, each naming the event index and the attribute.

Mapping (docs/cloudevents.md):

    ledger event_id   "ce~" + sha256(JSON [source, id]) in hex: the ledger dedupes on
                      (site_id, event_id), so on (site, source, id) as the CloudEvents spec asks.
                      `~` is not in /api/sync's event_id alphabet: no collision by construction.
    type              type (1-64 characters, the ledger's rule)
    occurred_at       time, or the time the request arrived when absent or null
    quantity          from data by the JSON pointer configured for the type
                      (OPSMANTIK_CLOUDEVENTS_QUANTITY), else 1
    properties        {"ce": {"source", "id", "subject", [dataschema], [extensions]}, "data": data}
    subject           subject (1-256 characters, required as in OpenMeter): the event's subject,
                      as /api/sync's optional `subject` (events.MAX_SUBJECT_CHARS)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from opsmantik.events import (
    MAX_PROPERTIES_BYTES,
    MAX_PROPERTIES_DEPTH,
    MAX_QUANTITY,
    MAX_SUBJECT_CHARS,
    MAX_TYPE_CHARS,
    Event,
    FieldError,
    Limits,
    Parsed,
    _valid,  # the batch with its in-batch dedupe (distinct, slots), as parse_request builds it
    has_nul,
    parse_time,
    serialised,
)

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
MEDIA_TYPES = (SINGLE, BATCH, JSON)
SPECVERSION = "1.0"
MAX_ID_CHARS = 256
MAX_SOURCE_CHARS = 512
MAX_DATASCHEMA_CHARS = 512
MAX_EXTENSION_CHARS = 256  # a string extension attribute's value
KNOWN = frozenset(
    {"id", "source", "specversion", "type", "subject", "time", "data", "datacontenttype", "dataschema"}
)
# CloudEvents 1.0: attribute names are 1-20 lower-case ASCII letters or digits.
ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,20}", re.ASCII)
# A URI-reference has no spaces or control characters (the check stops there: no full RFC 3986).
NO_SPACE = re.compile(r"[^\x00-\x20\x7f]+", re.ASCII)
DECIMAL = re.compile(r"[0-9]{1,13}", re.ASCII)

DEFAULT_LIMITS = Limits()
Pointers = Mapping[str, Sequence[str]]  # CloudEvent type (or "*") → the pointer's reference tokens


def ledger_event_id(source: str, event_id: str) -> str:
    """Deterministic and injective on (source, id) up to SHA-256 collisions: the JSON array
    encoding of the pair is unambiguous (no separator a source or id could contain)."""
    digest = hashlib.sha256(orjson.dumps([source, event_id])).hexdigest()
    return "ce~" + digest


def _text(item: dict[str, Any], name: str, limit: int, errors: list[tuple[str, str]]) -> str | None:
    value = item.get(name)
    if value is None:
        errors.append((name, "required"))
        return None
    if not (isinstance(value, str) and 1 <= len(value) <= limit and "\x00" not in value):
        errors.append((name, f"must be a string of 1-{limit} characters without NUL"))
        return None
    return value


def _quantity(data: object, tokens: Sequence[str]) -> int | str:
    """The integer at the pointer, or the problem (an OpenMeter value may be a numeric string)."""
    pointer = "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens)
    value = data
    for token in tokens:
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return f"no value at {pointer} (the quantity of this type)"
    if (type(value) is float and value.is_integer()) or (isinstance(value, str) and DECIMAL.fullmatch(value)):
        value = int(value)
    if type(value) is int and 1 <= value <= MAX_QUANTITY:
        return value
    return f"{pointer} (the quantity) must be an integer from 1 to {MAX_QUANTITY}, or its decimal string"


def validate_cloudevent(
    item: object, now: datetime, pointers: Pointers, limits: Limits = DEFAULT_LIMITS
) -> Event | list[tuple[str, str]]:
    """The event, or every (attribute, message) wrong with it."""
    if not isinstance(item, dict):
        return [("", "a CloudEvent must be a JSON object")]
    errors: list[tuple[str, str]] = []
    specversion = item.get("specversion")
    if specversion is None:
        errors.append(("specversion", "required"))
    elif specversion != SPECVERSION:
        errors.append(("specversion", f'must be "{SPECVERSION}"'))
    ce_id = _text(item, "id", MAX_ID_CHARS, errors)
    source = _text(item, "source", MAX_SOURCE_CHARS, errors)
    if source is not None and not NO_SPACE.fullmatch(source):
        errors.append(("source", "must be a URI-reference: no spaces or control characters"))
    kind = _text(item, "type", MAX_TYPE_CHARS, errors)
    subject = _text(item, "subject", MAX_SUBJECT_CHARS, errors)

    occurred = now
    raw_time = item.get("time")
    if raw_time is not None:
        parsed = parse_time(raw_time) if isinstance(raw_time, str) else None
        if parsed is None:
            errors.append(("time", "must be an RFC 3339 date-time with an offset"))
        elif parsed > now + limits.max_ahead:
            errors.append(("time", "more than 5 minutes in the future"))
        elif parsed < now - limits.max_age:
            errors.append(("time", "older than 35 days"))
        else:
            occurred = parsed

    content_type = item.get("datacontenttype")
    if content_type is not None and content_type != JSON:
        errors.append(("datacontenttype", f'must be "{JSON}" or absent'))
    dataschema = item.get("dataschema")
    if dataschema is not None and not (
        isinstance(dataschema, str)
        and len(dataschema) <= MAX_DATASCHEMA_CHARS
        and NO_SPACE.fullmatch(dataschema)
    ):
        errors.append(("dataschema", f"must be a URI of 1-{MAX_DATASCHEMA_CHARS} characters"))

    data = item.get("data")
    data_ok = data is None or isinstance(data, dict)
    if not data_ok:
        errors.append(("data", "must be a JSON object or null"))

    attributes: dict[str, Any] = {"source": source, "id": ce_id, "subject": subject}
    if dataschema is not None:
        attributes["dataschema"] = dataschema
    for name in item.keys() - KNOWN:
        value = item[name]
        if not ATTRIBUTE_NAME.fullmatch(name):
            problem = "unknown attribute: names are 1-20 characters of [a-z0-9]"
            if name == "data_base64":
                problem = "binary data is not accepted: data must be a JSON object"
            errors.append((name[:64], problem))
        elif isinstance(value, str):
            if len(value) > MAX_EXTENSION_CHARS or "\x00" in value:
                errors.append((name, f"must be at most {MAX_EXTENSION_CHARS} characters without NUL"))
            attributes[name] = value
        elif value is None:
            pass  # CloudEvents: an optional attribute given as null is absent
        elif isinstance(value, bool | int | float):
            attributes[name] = value
        else:
            errors.append((name, "an extension attribute must be a string, number or boolean"))

    quantity: int | str = 1
    if kind is not None and data_ok:
        tokens = pointers.get(kind, pointers.get("*"))
        if tokens is not None:
            quantity = _quantity(data, tokens)
            if isinstance(quantity, str):
                errors.append(("data", quantity))

    properties = {"ce": attributes, "data": data}
    if not errors:
        encoded = serialised(properties)
        if encoded is None:
            deep = f"with the kept attributes, nests more than {MAX_PROPERTIES_DEPTH} levels"
            errors.append(("data", deep))
        elif len(encoded) > MAX_PROPERTIES_BYTES:
            errors.append(
                (
                    "data",
                    f"data and the kept attributes take {len(encoded)} bytes serialised; "
                    f"at most {MAX_PROPERTIES_BYTES}",
                )
            )
        elif b"\\u0000" in encoded and has_nul(properties):
            errors.append(("data", "strings must not contain NUL (\\u0000)"))

    if errors:
        return errors
    assert ce_id is not None and source is not None and kind is not None and isinstance(quantity, int)
    return Event(ledger_event_id(source, ce_id), kind, occurred, quantity, properties, subject)


def _fail(message: str, field: str | None = None) -> Parsed:
    return Parsed([], [FieldError(None, field, message)])


def parse_cloudevents(
    body: bytes, media_type: str, now: datetime, pointers: Pointers, limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """`media_type`: one of MEDIA_TYPES (parameters stripped): a single event for SINGLE, an array
    for BATCH, either for JSON."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _fail(f"body is not valid JSON: {exc}")
    if isinstance(doc, list) and media_type != SINGLE:
        if not doc:
            return _fail("the batch must not be empty")
        if len(doc) > limits.max_events:
            too_many = FieldError(None, None, f"{len(doc)} events; at most {limits.max_events}")
            return Parsed([], [too_many], True)
        items = doc
    elif isinstance(doc, dict) and media_type != BATCH:
        items = [doc]
    else:
        shape = {SINGLE: "one CloudEvent (a JSON object)", BATCH: "an array of CloudEvents"}
        wanted = shape.get(media_type, "a CloudEvent or an array of them")
        return _fail(f"a {media_type} body must be {wanted}")
    events: list[Event] = []
    errors: list[FieldError] = []
    for i, item in enumerate(items):
        result = validate_cloudevent(item, now, pointers, limits)
        if isinstance(result, Event):
            events.append(result)
        else:
            errors.extend(FieldError(i, f, m) for f, m in result)
    return Parsed([], errors) if errors else _valid(events)
