"""`opsmantik meters create|list|show|delete|backfill|compact` (docs/meters.md): printing and exit codes;
the work is in services/opsmantik/meters/."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import UTC, datetime

import asyncpg

from opsmantik.cli.args import OK
from opsmantik.cli.show import json_out, out
from opsmantik.config import Settings
from opsmantik.errors import UsageError
from opsmantik.events import parse_time
from opsmantik.meters import definitions


def _group_by(pairs: list[str]) -> dict[str, str]:
    groups: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep:
            raise UsageError(f"--group-by {pair!r}: NAME=JSONPATH")
        if name in groups:
            raise UsageError(f"--group-by {name}: given twice")
        groups[name] = path
    return groups


def _line(m: definitions.Meter) -> str:
    value = f"({m.value_property})" if m.value_property else ""
    groups = " ".join(f"{k}={v}" for k, v in sorted(m.group_by.items()))
    return f"{m.slug}: {m.aggregation}{value} of {m.event_type}" + (f" by {groups}" if groups else "")


async def cmd_meters(settings: Settings, args: argparse.Namespace) -> int:
    conn = await asyncpg.connect(settings.database_url, timeout=5)
    try:
        return await _run(conn, args)
    finally:
        await conn.close()


async def _run(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    if args.action == "create":
        m = await definitions.create(
            conn, args.slug, args.event_type, args.aggregation, args.value_property, _group_by(args.group_by)
        )
        json_out(m.as_dict()) if args.json else out(
            f"created {_line(m)} (counts from now; backfill for the past)"
        )
    elif args.action == "list":
        meters = await definitions.load(conn)
        json_out([m.as_dict() for m in meters]) if args.json else out("\n".join(_line(m) for m in meters))
    elif args.action == "show":
        m = await definitions.get(conn, args.slug)
        json_out(m.as_dict()) if args.json else out(_line(m))
    elif args.action == "delete":
        await definitions.delete(conn, args.slug)
        json_out({"deleted": args.slug}) if args.json else out(f"deleted {args.slug}")
    elif args.action == "compact":
        return await _compact(conn, args)
    else:
        from opsmantik.meters import backfill  # lazily: it loads the worker's metrics

        done = await backfill.backfill(conn, args.slug)
        if args.json:
            json_out(asdict(done))
        else:
            out(f"backfilled {done.slug}: {done.events_read} ledger rows read, {done.buckets} buckets")
    return OK


async def _compact(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    from opsmantik.meters import compact  # lazily, as backfill

    now = datetime.now(UTC)
    before = compact.default_before(now)
    if args.before is not None:
        parsed = parse_time(args.before)
        if parsed is None:
            raise UsageError(f"--before {args.before!r}: an RFC 3339 time with an offset")
        if parsed > now - compact.ACCEPTANCE:
            raise UsageError(
                f"--before {args.before}: within the acceptance window (events up to "
                f"{compact.ACCEPTANCE} old are still accepted); at most "
                f"{now - compact.ACCEPTANCE:%Y-%m-%dT%H:%M}Z"
            )
        before = parsed
    done = await compact.compact(conn, before)
    if args.json:
        json_out({**asdict(done), "before": done.before.isoformat()})
    else:
        out(
            f"compacted before {done.before.isoformat()}: {done.pairs} (meter, site) pairs, "
            f"{done.quarter_buckets_written} quarter buckets, "
            f"{done.unique_values_written} unique values written"
        )
    return OK


def add_commands(sub: argparse._SubParsersAction, json_help: str) -> None:  # type: ignore[type-arg]
    """Registered by cli/main.py's build_parser."""
    meters_p = sub.add_parser(
        "meters", help="meters: usage aggregates per site (docs/meters.md)"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    s = meters_p.add_parser("create", help="define a meter (global; aggregated per site from now on)")
    s.add_argument("slug", metavar="SLUG", help="1-63 characters of [a-z0-9_-]")
    s.add_argument("--event-type", required=True, metavar="TYPE", help="the event type, or * for every type")
    s.add_argument(
        "--aggregation", required=True, choices=definitions.AGGREGATIONS, help="how the values combine"
    )
    s.add_argument("--value-property", metavar="JSONPATH", help="the value, e.g. $.tokens (not for COUNT)")
    s.add_argument(
        "--group-by", action="append", default=[], metavar="NAME=JSONPATH", help="a dimension (repeatable)"
    )
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(func=cmd_meters, env=("database_url",))
    for action, text in (
        ("list", "every meter"),
        ("show", "one meter"),
        ("delete", "delete a meter and its data"),
    ):
        s = meters_p.add_parser(action, help=text)
        if action != "list":
            s.add_argument("slug", metavar="SLUG", help="the meter's slug")
        s.add_argument("--json", action="store_true", help=json_help)
        s.set_defaults(func=cmd_meters, env=("database_url",), exit1="no such meter")
    s = meters_p.add_parser(
        "backfill",
        help="rebuild a meter from the ledger in Postgres, exactly (idempotent; pauses the worker)",
    )
    s.add_argument("slug", metavar="SLUG", help="the meter's slug")
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(func=cmd_meters, env=("database_url",), exit1="no such meter")
    s = meters_p.add_parser(
        "compact",
        help="merge minute buckets older than the acceptance window into 15-minute buckets (exact)",
    )
    s.add_argument(
        "--before",
        metavar="TIME",
        help="RFC 3339; default: now - 35 days 5 min - 1 day (never within the acceptance window)",
    )
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(func=cmd_meters, env=("database_url",))
