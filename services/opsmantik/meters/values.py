"""What a meter reads from one event: its value and its group values, or why it skips the event.

The rules (docs/meters.md "Values"): the event is always billed; a meter skips an event whose
value it cannot use, and counts the skip in opsmantik_meter_skipped_total{meter, reason}.
- numeric value (SUM, AVG, MIN, MAX, LATEST): a JSON number, or a string holding a decimal
  number (as OpenMeter accepts); finite and |v| <= 10^15 (MAX_VALUE). Missing or null →
  `missing`; a bool or another string → `not_a_number`; an object or array → `nested`; larger →
  `out_of_range`. A float is taken at its shortest decimal form (0.1 is 0.1 exactly).
- UNIQUE_COUNT value: a string of at most 256 characters, or a number or bool (its JSON text).
  Missing or null → `missing`; object or array → `nested`; a longer string → `too_long`.
- group value: a string of at most 256 characters, or a number or bool (its JSON text); missing
  or null → JSON null (a placeholder, not a skip); an object or array → skipped `group_nested`; a
  longer string → skipped `group_too_long`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

import orjson

from opsmantik.meters.definitions import QUANTITY, Meter
from opsmantik.meters.jsonpath import MISSING

MAX_VALUE = Decimal(10) ** 15
MAX_TEXT = 256
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?")


@dataclass(frozen=True)
class Skip:
    """The meter does not count the event; `reason` is the metric's label (a value, not an
    exception: a skip is an ordinary outcome and never leaves `aggregate.accumulate`)."""

    reason: str


def event_data(event_id: str, properties: object) -> object:
    """A CloudEvent's `data` (the gateway stores it under properties.data, docs/cloudevents.md);
    an /api/sync event's `properties` ({} when it has none)."""
    if properties is None:
        return {}
    if event_id.startswith("ce~") and isinstance(properties, dict):
        return properties.get("data") or {}
    return properties


def number(raw: object) -> Decimal | Skip:
    if raw is MISSING or raw is None:
        return Skip("missing")
    if isinstance(raw, bool):
        return Skip("not_a_number")
    if isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            return Skip("out_of_range")
        value = Decimal(repr(raw))
    elif isinstance(raw, str):
        if not _DECIMAL.fullmatch(raw):
            return Skip("not_a_number")
        value = Decimal(raw)
    elif isinstance(raw, dict | list):
        return Skip("nested")
    else:
        return Skip("not_a_number")
    if abs(value) > MAX_VALUE:
        return Skip("out_of_range")
    return value


def text(raw: object, prefix: str = "") -> str | Skip:
    if isinstance(raw, dict | list):
        return Skip(f"{prefix}nested")
    if isinstance(raw, str):
        if len(raw) > MAX_TEXT:
            return Skip(f"{prefix}too_long")
        return raw
    return orjson.dumps(raw).decode()  # number or bool: its JSON text


def value_of(meter: Meter, data: object, quantity: int) -> Decimal | str | None | Skip:
    """None for COUNT; the Decimal of a numeric meter; the text of a UNIQUE_COUNT."""
    if meter.aggregation == "COUNT":
        return None
    if meter.value_property == QUANTITY:
        return Decimal(quantity)
    assert meter.value_path is not None
    raw = meter.value_path.read(data)
    if meter.aggregation == "UNIQUE_COUNT":
        if raw is MISSING or raw is None:
            return Skip("missing")
        return text(raw)
    return number(raw)


def groups_of(meter: Meter, data: object) -> str | Skip:
    """The group values as a JSON object text (keys sorted), null for a missing one."""
    out: dict[str, str | None] = {}
    for name, path in meter.group_paths:
        raw = path.read(data)
        value = None if raw is MISSING or raw is None else text(raw, "group_")
        if isinstance(value, Skip):
            return value
        out[name] = value
    return orjson.dumps(out, option=orjson.OPT_SORT_KEYS).decode()
