"""Meter definitions: global (the operator defines them), aggregated per site.

A meter counts the events of one type (or `*`) with an aggregation over a value read from the
event's data by a JSONPath (meters/jsonpath.py), grouped by named JSONPaths. The built-in meters
`events` (COUNT) and `quantity` (SUM of the event's quantity) are created by the migration and
cannot be deleted. `subject`, `customer_id` and `billing_month` are reserved group-by names: the
event's subject, its site, its billing month (docs/meters.md).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from opsmantik.db.queries import package_queries
from opsmantik.errors import NotFound, Refused, UsageError
from opsmantik.meters.jsonpath import BadPath, JsonPath, parse

Q = package_queries("opsmantik.meters", "meters.sql")
AGGREGATIONS = ("COUNT", "SUM", "AVG", "MIN", "MAX", "UNIQUE_COUNT", "LATEST")
RESERVED_GROUPS = frozenset({"subject", "customer_id", "billing_month"})
MAX_GROUPS = 8
QUANTITY = "$quantity"  # the built-in `quantity` meter's value: the event's own quantity
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class BadMeter(UsageError):
    """A meter definition that cannot be created; the message names the argument."""


@dataclass(frozen=True)
class Meter:
    meter_id: uuid.UUID
    slug: str
    event_type: str  # '*' for every type
    aggregation: str
    value_property: str | None
    group_by: dict[str, str]  # name -> JSONPath text
    builtin: bool
    created_at: datetime
    backfilled_at: datetime | None
    value_path: JsonPath | None  # parsed value_property (None for COUNT and `quantity`)
    group_paths: tuple[tuple[str, JsonPath], ...]

    def matches(self, event_type: str) -> bool:
        return self.event_type == "*" or self.event_type == event_type

    def as_dict(self) -> dict[str, object]:
        """OpenMeter's meter object (plus our own fields)."""
        return {
            "id": str(self.meter_id),
            "slug": self.slug,
            "eventType": self.event_type,
            "aggregation": self.aggregation,
            "valueProperty": self.value_property,
            "groupBy": self.group_by,
            "windowSize": "MINUTE",
            "builtin": self.builtin,
            "createdAt": self.created_at.isoformat(),
            "backfilledAt": self.backfilled_at.isoformat() if self.backfilled_at else None,
        }


def _meter(row: asyncpg.Record) -> Meter:
    group_by: dict[str, str] = orjson.loads(row["group_by"])
    vp = row["value_property"]
    return Meter(
        row["meter_id"],
        row["slug"],
        row["event_type"],
        row["aggregation"],
        vp,
        group_by,
        row["builtin"],
        row["created_at"],
        row["backfilled_at"],
        parse(vp) if vp is not None and vp != QUANTITY else None,
        tuple((name, parse(path)) for name, path in sorted(group_by.items())),
    )


def check_definition(
    slug: str, event_type: str, aggregation: str, value_property: str | None, group_by: dict[str, str]
) -> None:
    """Every rule of a definition; BadMeter names the argument to fix."""
    if not _SLUG.fullmatch(slug):
        raise BadMeter("SLUG: 1-63 characters of [a-z0-9_-], starting with a letter or digit")
    if not (1 <= len(event_type) <= 64) or "\x00" in event_type:
        raise BadMeter("--event-type: 1-64 characters (or * for every type)")
    if aggregation not in AGGREGATIONS:
        raise BadMeter(f"--aggregation: one of {', '.join(AGGREGATIONS)}")
    if aggregation == "COUNT" and value_property is not None:
        raise BadMeter("--value-property: COUNT takes none")
    if aggregation != "COUNT" and value_property is None:
        raise BadMeter(f"--value-property: {aggregation} needs one (a JSONPath such as $.tokens)")
    if value_property is not None:
        try:
            parse(value_property)
        except BadPath as exc:
            raise BadMeter(f"--value-property {value_property!r}: {exc}") from None
    if len(group_by) > MAX_GROUPS:
        raise BadMeter(f"--group-by: at most {MAX_GROUPS}")
    for name, path in group_by.items():
        if name in RESERVED_GROUPS:
            raise BadMeter(f"--group-by {name}: reserved ({', '.join(sorted(RESERVED_GROUPS))})")
        if not _GROUP_NAME.fullmatch(name):
            raise BadMeter(f"--group-by {name!r}: a name of [A-Za-z0-9_], not starting with a digit")
        try:
            parse(path)
        except BadPath as exc:
            raise BadMeter(f"--group-by {name}={path}: {exc}") from None


async def load(conn: asyncpg.Connection) -> list[Meter]:
    return [_meter(r) for r in await conn.fetch(Q["all_meters"])]


async def load_for_batch(conn: asyncpg.Connection) -> list[Meter]:
    """The meters a worker batch counts into (meters.sql batch_meters: the rule of "counted")."""
    return [_meter(r) for r in await conn.fetch(Q["batch_meters"])]


def counted(meter: Meter, ledgered_at: datetime) -> bool:
    """Whether `meter` counted a row ledgered at `ledgered_at` (meters.sql batch_meters)."""
    return meter.backfilled_at is not None or ledgered_at >= meter.created_at


async def get(conn: asyncpg.Connection, slug_or_id: str) -> Meter:
    if "\x00" in slug_or_id:  # no meter has one, and Postgres text cannot hold it (an error, a 503)
        raise NotFound(f"no meter {slug_or_id!r}")
    row = await conn.fetchrow(Q["meter_by_slug"], slug_or_id)
    if row is None:
        raise NotFound(f"no meter {slug_or_id!r}")
    return _meter(row)


async def create(
    conn: asyncpg.Connection,
    slug: str,
    event_type: str,
    aggregation: str,
    value_property: str | None,
    group_by: dict[str, str],
) -> Meter:
    """Counts from the first batch after the commit on; `backfill` adds the ledger before it."""
    check_definition(slug, event_type, aggregation, value_property, group_by)
    async with conn.transaction():
        await conn.execute(Q["definitions_lock"])
        row = await conn.fetchrow(
            Q["insert_meter"], slug, event_type, aggregation, value_property, orjson.dumps(group_by).decode()
        )
    if row is None:
        raise Refused(f"a meter {slug!r} exists already")
    return _meter(row)


async def delete(conn: asyncpg.Connection, slug: str) -> None:
    async with conn.transaction():
        await conn.execute(Q["definitions_lock"])
        if await conn.fetchval(Q["delete_meter"], slug) is None:
            meter = await conn.fetchrow(Q["meter_by_slug"], slug)
            if meter is not None:
                raise Refused(f"{slug!r} is a built-in meter: it cannot be deleted")
            raise NotFound(f"no meter {slug!r}")
