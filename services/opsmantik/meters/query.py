"""OpenMeter's meter query: parameters checked (BadQuery names the one to fix), run, answered.

Parameters (docs/meters.md "Query"): from, to (RFC 3339; inclusive, exclusive), windowSize
(MINUTE|HOUR|DAY|MONTH; absent: one row for [from, to)), windowTimeZone (IANA, default UTC),
subject (repeatable), groupBy (repeatable: the meter's group names, subject, customer_id,
billing_month), filterGroupBy[k]=v, filterCustomerId (repeatable, the operator only). The answer
has at most MAX_ROWS rows (and at most MAX_WINDOWS windows); more is a 400.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import orjson

from opsmantik.db.queries import package_queries
from opsmantik.errors import UsageError
from opsmantik.events import parse_time
from opsmantik.meters import compact, rollup, windows
from opsmantik.meters.definitions import Meter

Q = package_queries("opsmantik.meters", "query.sql")
# LATEST's ordered aggregate in `aggregate`; the other aggregations' statement is the same without
# it, so that Postgres can hash instead of sort (query.sql).
_LATEST = """(array_agg(b.latest_value ORDER BY b.latest_at DESC, b.latest_event_id COLLATE "C" DESC)
            FILTER (WHERE b.latest_at IS NOT NULL))[1] AS latest"""
assert Q["aggregate"].count(_LATEST) == 1, "query.sql's aggregate no longer holds LATEST's aggregate"
Q["aggregate_plain"] = Q["aggregate"].replace(_LATEST, "NULL::numeric AS latest")
MAX_ROWS = 10_000
MAX_WINDOWS = 10_000
MAX_FILTER_VALUES = 100
# The stored rows a query may read (minute buckets, hour and day rollups, or their distinct values
# for UNIQUE_COUNT), counted through the index before it runs; more is a 400 naming windowSize (or
# `from` without one): the answer's time is bounded, never the 30 s timeout's 503. At ≈ 1-4 µs a
# row on the shared 2-core machine (docs/benchmarks.md "Meters"), 1M rows is 1-4 s.
MAX_READ = 1_000_000
_FILTER = re.compile(r"filterGroupBy\[([^\]]{1,63})\]")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class BadQuery(UsageError):
    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


@dataclass(frozen=True)
class MeterQuery:
    start: datetime | None
    end: datetime | None
    window_size: str | None
    zone: ZoneInfo
    zone_name: str
    subjects: list[str] | None
    group_by: list[str]
    filters: dict[str, str]
    customers: list[uuid.UUID] | None


@dataclass(frozen=True)
class Row:
    value: int | float | None
    window_start: datetime
    window_end: datetime
    subject: str | None
    customer_id: uuid.UUID | None
    group_by: dict[str, str | None]

    def as_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "windowStart": iso(self.window_start),
            "windowEnd": iso(self.window_end),
            "subject": self.subject,
            "customerId": str(self.customer_id) if self.customer_id else None,
            "groupBy": self.group_by,
        }


@dataclass(frozen=True)
class Answer:
    start: datetime | None
    end: datetime | None
    window_size: str | None
    rows: list[Row]

    def as_dict(self) -> dict[str, object]:
        return {
            "from": iso(self.start) if self.start else None,
            "to": iso(self.end) if self.end else None,
            "windowSize": self.window_size,
            "data": [r.as_dict() for r in self.rows],
        }


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(name: str, raw: str) -> datetime:
    t = parse_time(raw)
    if t is None:
        raise BadQuery(name, "an RFC 3339 time with an offset, e.g. 2026-03-08T00:00:00Z")
    if t.second or t.microsecond:
        raise BadQuery(name, "must be a whole minute (meters are kept per minute)")
    return t.astimezone(UTC)


def _one(params: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in params if k == name]
    if len(values) > 1:
        raise BadQuery(name, "given more than once")
    return values[0] if values else None


def parse_params(params: Iterable[tuple[str, str]], meter: Meter, operator: bool) -> MeterQuery:
    """OpenMeter's parameters; unknown ones are refused (a typo should not widen the answer)."""
    items = list(params)
    known = {"from", "to", "windowSize", "windowTimeZone", "subject", "groupBy", "filterCustomerId"}
    for k, _ in items:
        if k not in known and not _FILTER.fullmatch(k):
            raise BadQuery(k, "unknown parameter")
    raw_from, raw_to = _one(items, "from"), _one(items, "to")
    start = _time("from", raw_from) if raw_from is not None else None
    end = _time("to", raw_to) if raw_to is not None else None
    if start and end and start >= end:
        raise BadQuery("from", "must be before `to`")
    size = _one(items, "windowSize")
    if size is not None and size not in windows.SIZES:
        raise BadQuery("windowSize", f"one of {', '.join(windows.SIZES)}")
    zone_name = _one(items, "windowTimeZone") or "UTC"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadQuery("windowTimeZone", f"{zone_name!r} is not an IANA time zone") from None
    if size is not None:
        for name, t in (("from", start), ("to", end)):
            if t is not None and windows.floor(t, size, zone) != t:
                raise BadQuery(name, f"must be a {size} boundary in {zone_name}")
    subjects = [v for k, v in items if k == "subject"] or None
    names = set(meter.group_by) | {"subject", "billing_month"} | ({"customer_id"} if operator else set())
    group_by = [v for k, v in items if k == "groupBy"]
    for g in group_by:
        if g not in names:
            raise BadQuery(
                "groupBy", f"{g!r} is not a group of meter {meter.slug} ({', '.join(sorted(names))})"
            )
    filters: dict[str, str] = {}
    for k, v in items:
        m = _FILTER.fullmatch(k)
        if m:
            if m[1] not in set(meter.group_by) | {"billing_month"}:
                raise BadQuery(k, f"{m[1]!r} is not a group of meter {meter.slug}")
            filters[m[1]] = v
    if "billing_month" in filters and not _MONTH.fullmatch(filters["billing_month"]):
        raise BadQuery("filterGroupBy[billing_month]", "a month YYYY-MM")
    customers_raw = [v for k, v in items if k == "filterCustomerId"]
    if customers_raw and not operator:
        raise BadQuery("filterCustomerId", "only the operator token reads other sites")
    customers = None
    if customers_raw:
        try:
            customers = [uuid.UUID(c) for c in customers_raw]
        except ValueError:
            raise BadQuery("filterCustomerId", "a site id (UUID)") from None
    for name, values in (("subject", subjects or []), ("filterCustomerId", customers_raw)):
        if len(values) > MAX_FILTER_VALUES:
            raise BadQuery(name, f"at most {MAX_FILTER_VALUES} values")
    # Postgres text and jsonb cannot hold NUL: refused here, not a database error (a 503).
    for name, value in [*(("subject", s) for s in subjects or []), *filters.items()]:
        if "\x00" in value:
            raise BadQuery(name if name == "subject" else f"filterGroupBy[{name}]", "no NUL character")
    return MeterQuery(start, end, size, zone, zone_name, subjects, group_by, filters, customers)


def _value(
    meter: Meter, n: int, total: Decimal, lo: object, hi: object, latest: object
) -> int | float | None:
    """The window's value as OpenMeter's JSON number (an integer when it is one)."""
    agg = meter.aggregation
    if agg in ("COUNT", "UNIQUE_COUNT"):
        return int(n)
    v: object = {"SUM": total, "MIN": lo, "MAX": hi, "LATEST": latest}.get(agg)
    if agg == "AVG":
        v = total / Decimal(n) if n else None
    if v is None:
        return None
    d = Decimal(str(v)) if not isinstance(v, Decimal) else v
    return int(d) if d == d.to_integral_value() else float(d)


async def run(conn: asyncpg.Connection, meter: Meter, q: MeterQuery, sites: list[uuid.UUID] | None) -> Answer:
    """`sites` None: every site (the operator); else the sites the caller may read."""
    scope = sites
    if q.customers is not None:
        scope = [c for c in q.customers if sites is None or c in sites]
    # One snapshot for the extent, the compaction watermark and the buckets. Compaction commits
    # the raised watermark before it merges any bucket, so a snapshot that saw the old watermark
    # sees no merged bucket either; at READ COMMITTED a compaction between the watermark's read
    # and the buckets' would hand 15-minute buckets to a MINUTE window as minutes.
    # No JIT: the pieces' unnest makes the planner overestimate the rows by orders of magnitude, and
    # compiling the plan then cost ~0.5 s of a query that runs in tens of ms (docs/benchmarks.md
    # "Meters"). Same rows either way: JIT only changes how they are computed.
    # A custom plan every time: after 5 executions Postgres may keep a generic plan, where
    # `$2 IS NULL OR site_id = ANY($2)` cannot bound the index, and each piece then scans every
    # bucket of the meter (300k events: a MINUTE query after 6 DAY ones passed the 30 s timeout;
    # custom 46-67 ms).
    # work_mem: LATEST's ordered aggregate sorts the rows read (144k for MINUTE windows over a day
    # of a 100-value group-by): in memory, not spilled to disk at the default 4 MB.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(
            "SET LOCAL jit = off; SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL work_mem = '64MB'"
        )
        start, end = q.start, q.end
        if start is None or end is None:
            ext = await conn.fetchrow(Q["extent"], meter.meter_id, scope)
            if ext["lo"] is None and (start is None or end is None):
                return Answer(start, end, q.window_size, [])
            size = q.window_size or "MINUTE"
            start = start or windows.floor(ext["lo"], size, q.zone)
            if end is None:
                last = max(ext["hi"] + timedelta(minutes=1), datetime.now(UTC))
                end = windows.floor(last, size, q.zone)
                if end < last:
                    end = windows.next_boundary(end, size, q.zone)
            if start >= end:
                return Answer(start, end, q.window_size, [])
        spans = _spans(start, end, q)
        mark = await compact.watermark(conn)
        _refuse_below_watermark(spans, q, mark)
        unique = meter.aggregation == "UNIQUE_COUNT"
        where, args = arguments(meter, q, spans, scope, mark)
        await _refuse_expensive(conn, q, unique, where)
        records = await conn.fetch(Q[_statement(meter)], *args, timeout=30)
    by_subject = "subject" in q.group_by or q.subjects is not None
    if len(records) > MAX_ROWS:
        raise BadQuery(
            "windowSize", f"the answer has more than {MAX_ROWS} rows: a larger window or fewer groups"
        )
    rows = []
    for r in records:
        ws, we = spans[r["ord"] - 1]
        groups: dict[str, str | None] = (
            orjson.loads(r["groups"]) if isinstance(r["groups"], str) else dict(r["groups"])
        )
        if r["billing_month"] is not None:
            groups["billing_month"] = f"{r['billing_month']:%Y-%m}"
        value: int | float | None = int(r["n"])
        if not unique:
            value = _value(meter, r["n"], r["total"], r["lo"], r["hi"], r["latest"])
        subject = (r["subject"] or None) if by_subject else None
        rows.append(Row(value, ws, we, subject, r["site_id"], groups))
    return Answer(start, end, q.window_size, rows)


def arguments(
    meter: Meter,
    q: MeterQuery,
    spans: list[tuple[datetime, datetime]],
    scope: list[uuid.UUID] | None,
    mark: datetime | None,
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """The arguments of query.sql: (those of rows_*, those of aggregate/unique_count). Each window
    is read as its pieces (rollup.pieces: minutes, hours, days, hours, minutes). A minute piece of a
    query without subjects or groups (filtered or grouped by) reads the minute rollups over every
    subject and group (width 1), which exist at and after the compaction watermark `mark`."""
    whole = (
        meter.aggregation != "UNIQUE_COUNT"
        and q.subjects is None
        and "subject" not in q.group_by
        and not any(g in meter.group_by for g in q.group_by)
        and not any(k != "billing_month" for k in q.filters)
    )
    ords: list[int] = []
    widths: list[int] = []
    starts: list[datetime] = []
    ends: list[datetime] = []
    for i, (ws, we) in enumerate(spans, 1):
        for width, a, b in rollup.pieces(ws, we):
            ords.append(i)
            widths.append(1 if whole and width == 0 and (mark is None or a >= mark) else width)
            starts.append(a)
            ends.append(b)
    where = (meter.meter_id, scope, ords, widths, starts, ends)
    args = (
        *where,
        q.subjects,
        orjson.dumps({k: v for k, v in q.filters.items() if k != "billing_month"}).decode(),
        _month(q.filters.get("billing_month")),
        "customer_id" in q.group_by,
        "subject" in q.group_by or q.subjects is not None,
        [g for g in meter.group_by if g not in q.group_by],  # removed from the groups object
        "billing_month" in q.group_by,
        MAX_ROWS + 1,  # more rows than the cap are not sent: the answer is refused
    )
    return where, args


def _statement(meter: Meter) -> str:
    """query.sql's statement for the meter: only LATEST needs the ordered aggregate."""
    if meter.aggregation == "UNIQUE_COUNT":
        return "unique_count"
    return "aggregate" if meter.aggregation == "LATEST" else "aggregate_plain"


async def _refuse_expensive(
    conn: asyncpg.Connection, q: MeterQuery, unique: bool, where: tuple[object, ...]
) -> None:
    """A query that would read more than MAX_READ stored rows is a 400, decided before it runs.
    First a bound from the rollups (cheap: a minute piece is bounded by its hour's rollup rows ×
    its minutes); only when that is over the cap, the exact count of the pieces' index entries (at
    most MAX_READ + 1)."""
    meter_id, scope, _, widths, starts, ends = where
    assert isinstance(widths, list) and isinstance(starts, list) and isinstance(ends, list)
    coarse = [(w, a, b) for w, a, b in zip(widths, starts, ends, strict=True) if w]
    minutes: dict[datetime, int] = {}  # UTC hour -> minutes of the minute pieces in it
    for w, a, b in zip(widths, starts, ends, strict=True):
        h = rollup.floor(a, rollup.HOUR) if not w else b
        while h < b:
            lo, hi = max(a, h), min(b, h + rollup.HOUR)
            minutes[h] = minutes.get(h, 0) + int((hi - lo).total_seconds() // 60)
            h += rollup.HOUR
    kind = "unique_count" if unique else "aggregate"
    bound = await conn.fetchval(
        Q[f"bound_{kind}"],
        meter_id,
        scope,
        [w for w, _, _ in coarse],
        [a for _, a, _ in coarse],
        [b for _, _, b in coarse],
        list(minutes),
        list(minutes.values()),
        MAX_READ + 1,
        timeout=30,
    )
    if bound <= MAX_READ:
        return
    read = await conn.fetchval(Q[f"rows_{kind}"], *where, MAX_READ + 1, timeout=30)
    if read > MAX_READ:
        raise BadQuery(
            "windowSize" if q.window_size is not None else "from",
            f"the query would read more than {MAX_READ:,} stored rows "
            f"({'distinct values' if unique else 'buckets'}): a shorter [from, to), "
            + ("a larger windowSize, " if q.window_size in ("MINUTE", "HOUR") else "")
            + "fewer subjects or groups",
        )


def _spans(start: datetime, end: datetime, q: MeterQuery) -> list[tuple[datetime, datetime]]:
    if q.window_size is None:
        return [(start, end)]
    spans = windows.windows(start, end, q.window_size, q.zone, MAX_WINDOWS)
    if spans is None:
        raise BadQuery("windowSize", f"more than {MAX_WINDOWS} windows between from and to")
    return spans


def _refuse_below_watermark(
    spans: list[tuple[datetime, datetime]], q: MeterQuery, mark: datetime | None
) -> None:
    """Below the compaction watermark buckets may be 15 minutes long (meters/compact.py): a window
    boundary there that is not a UTC quarter hour (MINUTE windows, a `from`/`to` off the quarter)
    cannot be answered exactly, so it is refused rather than answered from part of the data."""
    if mark is None or spans[0][0] >= mark:
        return
    bounds = [spans[0][0]] + [e for _, e in spans]
    bad = next((b for b in bounds if b < mark and compact.quarter(b) != b), None)
    if bad is None:
        return
    where = f"kept per 15 minutes before {iso(mark)} (compacted)"
    if q.window_size is not None:
        raise BadQuery("windowSize", f"{q.window_size} windows before {iso(mark)}: meters are {where}")
    raise BadQuery("from" if bad == spans[0][0] else "to", f"must be a quarter hour: meters are {where}")


def _month(raw: str | None) -> date | None:
    if raw is None:
        return None
    m = _MONTH.fullmatch(raw)
    assert m is not None  # parse_params checked it
    if not (1 <= int(m[2]) <= 12 and int(m[1]) >= 1):  # year 0000: date() raises, a 500
        raise BadQuery("filterGroupBy[billing_month]", "a month YYYY-MM")
    return date(int(m[1]), int(m[2]), 1)
