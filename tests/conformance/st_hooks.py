"""Schemathesis hooks (schemathesis.toml loads this file): the one rule of POST /api/sync that JSON
Schema cannot express, taught to the generator.

`occurred_at` must lie within [now - 35 days, now + 5 minutes] of the gateway's clock, and
`properties` must serialise to at most 16384 bytes (schemas/openapi.yaml says so in
words). A body
generated as *valid* gets its events' times moved into that window (and an oversized `properties`
emptied), so `positive_data_acceptance` keeps asserting that every other valid body is
accepted; bodies generated as *invalid* are left exactly as generated. POST /api/v1/events gets
the same treatment for its CloudEvents (`time`, and `data` with the kept attributes).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

SYNC = "/api/sync"
CLOUDEVENTS = "/api/v1/events"
CE_KNOWN = {"id", "source", "specversion", "type", "subject", "time", "data", "datacontenttype", "dataschema"}
MAX_PROPERTIES_BYTES = 16 * 1024  # services/opsmantik/events.py


def _recent(i: int) -> str:
    return (datetime.now(UTC) - timedelta(seconds=1 + i)).isoformat()


def _fix(event: Any, i: int) -> None:
    if not isinstance(event, dict):
        return
    if "occurred_at" in event:
        event["occurred_at"] = _recent(i)
    props = event.get("properties")
    if isinstance(props, dict) and len(json.dumps(props, separators=(",", ":"))) > MAX_PROPERTIES_BYTES:
        event["properties"] = {}


def _ce_properties(event: dict[str, Any]) -> int:
    """The size of the ledger properties POST /api/v1/events would store (gateway/cloudevents.py)."""
    kept = {k: v for k, v in event.items() if k not in CE_KNOWN and v is not None}
    kept.update(source=event.get("source"), id=event.get("id"), subject=event.get("subject"))
    if event.get("dataschema") is not None:
        kept["dataschema"] = event["dataschema"]
    doc = {"ce": kept, "data": event.get("data")}
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def _fix_cloudevent(event: Any, i: int) -> None:
    """The CloudEvents twin of _fix: `time` into the window, oversized data and extensions dropped."""
    if not isinstance(event, dict):
        return
    if event.get("time") is not None:
        event["time"] = _recent(i)
    if _ce_properties(event) > MAX_PROPERTIES_BYTES:
        event["data"] = {}
        for name in [k for k in event if k not in CE_KNOWN]:
            del event[name]


def _positive(case: Any) -> bool:
    meta = case.meta
    body = meta.components.get(ParameterLocation.BODY) if meta is not None else None
    mode = body.mode if body is not None else (meta.generation.mode if meta is not None else None)
    return bool(mode == GenerationMode.POSITIVE)


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if case.operation.path == CLOUDEVENTS and _positive(case):
        for i, event in enumerate(case.body if isinstance(case.body, list) else [case.body]):
            _fix_cloudevent(event, i)
        return case
    if case.operation.path != SYNC or not isinstance(case.body, dict):
        return case
    if not _positive(case):
        return case
    events = case.body.get("events")
    for i, event in enumerate(events if isinstance(events, list) else [case.body]):
        _fix(event, i)
    return case
