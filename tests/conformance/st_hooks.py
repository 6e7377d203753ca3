"""Schemathesis hooks (schemathesis.toml loads this file): the one rule of POST /api/sync that JSON
Schema cannot express, taught to the generator.

`occurred_at` must lie within [now - 35 days, now + 5 minutes] of the gateway's clock, and
`properties` must serialise to at most 16384 bytes (services/opsmantik/schemas/openapi.yaml says so in
words). A body
generated as *valid* gets its events' times moved into that window (and an oversized `properties`
emptied), so `positive_data_acceptance` keeps asserting that every other valid body is
accepted; bodies generated as *invalid* are left exactly as generated.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

SYNC = "/api/sync"
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


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if case.operation.path != SYNC or not isinstance(case.body, dict):
        return case
    meta = case.meta
    body = meta.components.get(ParameterLocation.BODY) if meta is not None else None
    mode = body.mode if body is not None else (meta.generation.mode if meta is not None else None)
    if mode != GenerationMode.POSITIVE:
        return case
    events = case.body.get("events")
    for i, event in enumerate(events if isinstance(events, list) else [case.body]):
        _fix(event, i)
    return case
