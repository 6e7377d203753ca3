"""Would the gateway have produced this message? Checked against schemas/event.v1.json
itself
plus the gateway's own rules the schema cannot say (time window, usage_month, NUL, size).

Deliberately independent of the worker's decoder: the audit must catch the worker
dead-lettering a valid event (a breach), so it cannot share the worker's idea of "valid". The
gateway's own limits (properties size, NUL) come from services/opsmantik/events.py, the gateway's rules.
Pure and total: any JSON value in, a reason or None out, never an exception.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from opsmantik import schema_files
from opsmantik.events import MAX_PROPERTIES_BYTES, has_nul

SCHEMA: dict[str, Any] = schema_files.json_schema("event.v1.json")
MAX_AGE = timedelta(days=35)  # occurred_at vs the gateway's clock (received_at)
MAX_AHEAD = timedelta(minutes=5)
_SLACK = timedelta(seconds=1)  # the gateway's `now` and received_at are taken microseconds apart
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "object": (dict,),
    "null": (type(None),),
    "array": (list,),
}


def _anchored(pattern: str) -> re.Pattern[str]:
    # JSON Schema's ^...$ with Python's fullmatch: `$` alone would accept a trailing newline.
    return re.compile(pattern.removeprefix("^").removesuffix("$"))


_PATTERNS = {
    name: _anchored(rule["pattern"]) for name, rule in SCHEMA["properties"].items() if "pattern" in rule
}


def _type_ok(value: object, kinds: str | list[str]) -> bool:
    names = [kinds] if isinstance(kinds, str) else kinds
    if isinstance(value, bool):  # JSON true is not an integer
        return "boolean" in names
    return any(isinstance(value, _TYPES.get(n, ())) for n in names)


def _rule_problem(name: str, rule: dict[str, Any], value: object) -> str | None:
    if "const" in rule and (type(value) is not type(rule["const"]) or value != rule["const"]):
        return f"{name} is not {rule['const']!r}"
    if "enum" in rule and not (isinstance(value, str) and value in rule["enum"]):
        return f"{name} not one of {rule['enum']}"
    if "type" in rule and not _type_ok(value, rule["type"]):
        return f"{name} is not {rule['type']}"
    if isinstance(value, str):
        if not rule.get("minLength", 0) <= len(value) <= rule.get("maxLength", len(value)):
            return f"{name} length out of range"
        if name in _PATTERNS and not _PATTERNS[name].fullmatch(value):
            return f"{name} does not match its pattern"
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not (rule.get("minimum", value) <= value <= rule.get("maximum", value))
    ):
        return f"{name} out of range"
    return None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
        return None if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def gateway_problem(doc: object) -> str | None:
    """None when `doc` is a message the gateway could have produced; else why not."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    props = SCHEMA["properties"]
    missing = [k for k in SCHEMA["required"] if k not in doc]
    if missing:
        return "missing " + ", ".join(missing)
    if SCHEMA.get("additionalProperties") is False:
        extra = sorted(str(k) for k in doc if k not in props)
        if extra:
            return "unknown fields " + ", ".join(extra)[:200]
    for name, rule in props.items():
        if name in doc:
            problem = _rule_problem(name, rule, doc[name])
            if problem:
                return problem
    try:
        if str(uuid.UUID(doc["site_id"])) != doc["site_id"]:
            return "site_id is not a canonical uuid"
    except ValueError:
        return "site_id is not a uuid"
    occurred, received = _time(doc["occurred_at"]), _time(doc["received_at"])
    if occurred is None or received is None:
        return "occurred_at or received_at is not a date-time with an offset"
    if not received - MAX_AGE - _SLACK <= occurred <= received + MAX_AHEAD + _SLACK:
        return "occurred_at outside the gateway's window around received_at"
    if doc["usage_month"] != occurred.date().replace(day=1).isoformat():
        return "usage_month is not occurred_at's UTC month"
    if "\x00" in doc["type"]:
        return "NUL in type"
    if doc.get("properties") is not None:
        try:
            size = len(orjson.dumps(doc["properties"]))
        except (orjson.JSONEncodeError, TypeError):
            return "properties cannot be serialised"
        if size > MAX_PROPERTIES_BYTES:
            return "properties larger than 16 KiB"
        if has_nul(doc["properties"]):
            return "NUL in properties"
    return None
