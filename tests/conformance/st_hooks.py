"""Schemathesis hooks (schemathesis.toml loads this file): the rules JSON Schema cannot express
(each documented in words in schemas/openapi.yaml and answered with a 400 naming the parameter),
taught to the generator.

A part of a request generated as *valid* is moved inside those rules, so
`positive_data_acceptance` keeps asserting that every other valid request is accepted; a part
generated as *invalid* is left exactly as generated. The rules:

- POST /api/sync: `occurred_at` within [now - 35 days, now + 5 minutes] of the gateway's clock,
  `properties` at most 16384 bytes serialised; POST /api/v1/events the same for a CloudEvent's
  `time` and its `data` with the kept attributes.
- the meter query (GET and POST /api/v1/meters/{meter}/query): `from`/`to` whole minutes (window
  boundaries in windowTimeZone with windowSize), `from` before `to`, at most 10000 windows;
  windowTimeZone an IANA zone; groupBy / filterGroupBy keys groups of the meter (only the ones
  every meter has are kept: subject, billing_month); filterCustomerId the operator's only (the
  fuzzer's GETs carry the site key, the first scheme listed).
- /dashboard/api/series and /top: `tz` an IANA zone, `group` a group of the meter (subject).
- GET /api/v1/events/{event_id}: without `source`, the id an /api/sync event_id or ce~<64 hex>.
- POST /api/v1/portal/tokens: `ttl` from 1 minute to 30 days.

Test data from the environment (tests/conformance/test_schemathesis.py sets it; a manual run
without it only misses the rewrites that need it): ST_OPSMANTIK_SITE_ID, the site of the keys
(a valid `site_id` is the caller's own: another is the documented 403, a random one 404);
ST_OPSMANTIK_EVENT_ID, an event of that site (dead-lettered), so the lookup answers 200 as well as
404; ST_OPSMANTIK_REVOCABLE_TOKEN_ID, a portal token DELETE may revoke once (after that, 404).
"""

from __future__ import annotations

import json
import os
import re
import zlib
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from opsmantik.events import parse_time
from opsmantik.meters import windows
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

SYNC = "/api/sync"
CLOUDEVENTS = "/api/v1/events"
EVENT = "/api/v1/events/{event_id}"
METER_QUERY = "/api/v1/meters/{meter}/query"
SERIES, TOP = "/dashboard/api/series", "/dashboard/api/top"
TOKENS, TOKEN = "/api/v1/portal/tokens", "/api/v1/portal/tokens/{token_id}"
CE_KNOWN = {"id", "source", "specversion", "type", "subject", "time", "data", "datacontenttype", "dataschema"}
MAX_PROPERTIES_BYTES = 16 * 1024  # services/opsmantik/events.py
SYNC_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}|ce~[0-9a-f]{64}")  # opsmantik.events
ZONES = sorted(zoneinfo.available_timezones())
# The longest span kept per window size: under the query's 10000 windows (meters/query.py).
SPAN = {
    None: timedelta(days=3660),
    "MINUTE": timedelta(days=6),
    "HOUR": timedelta(days=400),
    "DAY": timedelta(days=9000),
    "MONTH": timedelta(days=36600),
}
COMMON_GROUPS = {"subject", "billing_month"}  # every meter's; the rest depend on the meter
MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
TTL = re.compile(r"\s*([0-9]{1,9})([smhd]?)\s*")
TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_TIME = datetime(2026, 3, 8, tzinfo=UTC)  # for a date-time the gateway does not parse
SITE_ID = os.environ.get("ST_OPSMANTIK_SITE_ID")
EVENT_ID = os.environ.get("ST_OPSMANTIK_EVENT_ID")
_revocable = [t for t in [os.environ.get("ST_OPSMANTIK_REVOCABLE_TOKEN_ID")] if t]


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


def _positive(case: Any, location: ParameterLocation) -> bool:
    """Whether this part of the request was generated as valid."""
    meta = case.meta
    if meta is None:
        return False
    part = meta.components.get(location)
    mode = part.mode if part is not None else meta.generation.mode
    return bool(mode == GenerationMode.POSITIVE)


def _pick(options: list[str], seed: object) -> str:
    """A deterministic choice (a seed's run replays the same requests)."""
    return options[zlib.crc32(repr(seed).encode()) % len(options)]


def _zone(name: Any) -> str:
    """`name` if the gateway's zoneinfo knows it, else a zone that it does."""
    if isinstance(name, str) and name in ZONES:
        return name
    return _pick(ZONES, name)


def _instant(raw: Any) -> datetime | None:
    return parse_time(raw) if isinstance(raw, str) else None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _fix_span(p: dict[str, Any], zone: zoneinfo.ZoneInfo) -> None:
    """`from`/`to` onto boundaries of the window size in the zone, `from` before `to`, at most
    SPAN apart. An instant the calendar cannot move (year 1 or 9999 at a zone's edge), or whose
    window boundary is not a whole minute (no such `from` is valid), becomes DEFAULT_TIME."""
    size = p.get("windowSize")
    size = size if size in windows.SIZES else None

    def align(t: datetime) -> datetime:
        t = t.replace(second=0, microsecond=0)
        b = windows.floor(t, size, zone) if size else t
        if b.second:  # a zone's local mean time (before ~1900, e.g. -04:21:12): no whole minute
            raise ValueError(b)
        return b

    def after(t: datetime) -> datetime:
        return windows.next_boundary(t, size, zone) if size else t + timedelta(minutes=1)

    given = {name: p.get(name) is not None for name in ("from", "to")}
    start = (_instant(p["from"]) or DEFAULT_TIME) if given["from"] else None
    end = (_instant(p["to"]) or DEFAULT_TIME) if given["to"] else None
    try:
        start = align(start) if start else None
        end = align(end) if end else None
        if start and end and not (start < end <= start + SPAN[size]):
            end = after(start)
    except (OverflowError, ValueError):
        start = align(DEFAULT_TIME) if given["from"] else None
        end = after(start or align(DEFAULT_TIME)) if given["to"] else None
    for name, t in (("from", start), ("to", end)):
        if t is not None:
            p[name] = _iso(t)


def _fix_meter_query(p: Any) -> None:
    if not isinstance(p, dict):
        return
    p.pop("filterCustomerId", None)
    if p.get("windowTimeZone"):  # "" and null are UTC
        p["windowTimeZone"] = _zone(p["windowTimeZone"])
    _fix_span(p, zoneinfo.ZoneInfo(p.get("windowTimeZone") or "UTC"))
    if isinstance(p.get("groupBy"), list):
        p["groupBy"] = [g for g in p["groupBy"] if g in COMMON_GROUPS]
    elif isinstance(p.get("groupBy"), str) and p["groupBy"] not in COMMON_GROUPS:
        del p["groupBy"]
    filters = p.get("filterGroupBy")
    if isinstance(filters, dict):
        month = filters.get("billing_month")
        filters.clear()
        if month is not None:
            filters["billing_month"] = month if MONTH.fullmatch(month) else "2026-03"
    for name in [k for k in p if k.startswith("filterGroupBy[")]:  # a deepObject spelled out
        if name != "filterGroupBy[billing_month]":
            del p[name]
        elif not MONTH.fullmatch(str(p[name])):
            p[name] = "2026-03"


def _fix_ttl(body: Any) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("ttl"), str):
        return
    m = TTL.fullmatch(body["ttl"])
    if m is None or not 60 <= int(m[1]) * TTL_UNITS[m[2]] <= 30 * 86400:
        body["ttl"] = "15m"


def _own_site(query: Any) -> None:
    if SITE_ID and isinstance(query, dict) and "site_id" in query:
        query["site_id"] = SITE_ID


def _fix_event_lookup(case: Any) -> None:
    if _positive(case, ParameterLocation.QUERY):
        _own_site(case.query)
    source = case.query.get("source") if isinstance(case.query, dict) else None
    event_id = case.path_parameters.get("event_id")
    if source is not None or not _positive(case, ParameterLocation.PATH):
        return
    if not SYNC_EVENT_ID.fullmatch(str(event_id)):
        cleaned = re.sub(r"[^A-Za-z0-9._:-]", "", str(event_id))[:128]
        case.path_parameters["event_id"] = EVENT_ID or cleaned or "e"


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    path, body_ok = case.operation.path, _positive(case, ParameterLocation.BODY)
    query_ok = _positive(case, ParameterLocation.QUERY)
    if path == CLOUDEVENTS and case.operation.method.upper() == "GET":
        if query_ok:
            _own_site(case.query)
    elif path == CLOUDEVENTS and body_ok:
        for i, event in enumerate(case.body if isinstance(case.body, list) else [case.body]):
            _fix_cloudevent(event, i)
    elif path == SYNC and body_ok and isinstance(case.body, dict):
        events = case.body.get("events")
        for i, event in enumerate(events if isinstance(events, list) else [case.body]):
            _fix(event, i)
    elif path == EVENT:
        _fix_event_lookup(case)
    elif path == METER_QUERY:
        if query_ok:
            _fix_meter_query(case.query)
        if case.operation.method.upper() == "POST" and body_ok:
            _fix_meter_query(case.body)
    elif path in (SERIES, TOP) and query_ok and isinstance(case.query, dict):
        if "tz" in case.query:
            case.query["tz"] = _zone(case.query["tz"])
        if case.query.get("group", "subject") != "subject":
            case.query["group"] = "subject"
    elif path == TOKENS and body_ok and isinstance(case.body, dict):
        if SITE_ID and "site_id" in case.body:
            case.body["site_id"] = SITE_ID
        _fix_ttl(case.body)
    elif path == TOKEN and _positive(case, ParameterLocation.PATH) and _revocable:
        case.path_parameters["token_id"] = _revocable.pop()
    return case
