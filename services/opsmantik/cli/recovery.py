"""`opsmantik recover --since TIME [--margin-s S] [--dry-run] [--json]`: rebuild the ledger from
the topic (services/opsmantik/recovery/rewind.py), and `backup` / `restore --to TIME` of the
stack's Postgres (services/opsmantik/recovery/backup.py). docs/runbook.md has the drills."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opsmantik.cli import args as cli_args
from opsmantik.cli.errors import require_kafka
from opsmantik.cli.show import json_compact_out, out
from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack
from opsmantik.recovery import backup, status

DEFAULT_MARGIN_S = 300  # producers' clocks and the gateway's received_at vs the broker's timestamp


def _time(raw: str) -> datetime:
    value = datetime.fromisoformat(raw.strip())
    if value.tzinfo is None:
        raise ValueError("needs a time zone, e.g. 2025-01-31T12:00:00Z or +00:00")
    if value > datetime.now(UTC) + timedelta(minutes=5):
        raise ValueError("is in the future")
    return value.astimezone(UTC)


TIME = cli_args.Arg(
    "an ISO 8601 time with a zone", _time, "2025-01-31T12:00:00+00:00", ("", "x", "2025-01-31T12:00:00")
)


def _prom_file(raw: str) -> Path:
    if not raw.strip() or "\x00" in raw:
        raise ValueError("a file path, without NUL")
    path = Path(raw)
    if not path.parent.is_dir():
        raise ValueError(f"directory {path.parent} does not exist")
    return path


PROM_FILE = cli_args.Arg(
    "a file in an existing directory", _prom_file, "/tmp/opsmantik.prom", ("", "/nonexistent-dir/x")
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The parsers (services/opsmantik/cli/main.py calls this: one line there)."""
    s = sub.add_parser(
        "recover",
        help="rewind the worker's and the audit's groups to the topic offsets of TIME minus a "
        "margin, so the worker rebuilds the ledger from Kafka (dedupe makes it exact; "
        "docs/runbook.md)",
    )
    s.add_argument("--since", required=True, type=TIME, metavar="TIME", help="the database's restore point")
    s.add_argument(
        "--margin-s",
        type=cli_args.integer(0, 7 * 86400, "seconds from 0 to 604800"),
        default=DEFAULT_MARGIN_S,
        metavar="S",
        help=f"rewind this much further back than TIME (default {DEFAULT_MARGIN_S})",
    )
    s.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    s.add_argument("--json", action="store_true", help="one JSON document (for programs)")
    s.set_defaults(func=cmd_recover, env=("kafka_bootstrap", "topic", "worker_group", "audit_group"))

    s = sub.add_parser(
        "backup",
        help="a base backup (pg_basebackup) of the local stack's Postgres; WAL is archived "
        "continuously beside it (docs/reliability.md)",
    )
    s.add_argument("--json", action="store_true", help="one JSON document (for programs)")
    s.set_defaults(func=cmd_backup, env=())
    s = sub.add_parser(
        "restore",
        help="point-in-time restore of the local stack's Postgres from the newest backup before "
        "TIME and the WAL archive (the old data directory is moved aside, never deleted)",
    )
    s.add_argument("--to", required=True, type=TIME, metavar="TIME", help="the point to restore to")
    s.add_argument("--json", action="store_true", help="one JSON document (for programs)")
    s.set_defaults(func=cmd_restore, env=())
    s = sub.add_parser(
        "restore-point",
        help="the newest restorable point, the oldest backup and the topic's retention (and "
        "--prom FILE: the gauges for node_exporter's textfile collector)",
    )
    s.add_argument("--prom", type=PROM_FILE, metavar="FILE", help="write the gauges to FILE (atomically)")
    s.add_argument("--json", action="store_true", help="one JSON document (for programs)")
    s.set_defaults(func=cmd_restore_point, env=("kafka_bootstrap", "topic"))


def cmd_recover(settings: Settings, args: argparse.Namespace) -> int:
    # Refusals (a group with members, retention short of TIME) are `Refused`: exit 2, one line.
    from opsmantik.recovery import rewind  # lazily: Kafka's admin client for this command only

    require_kafka(settings)  # no broker: exit 3 in a second, not after the admin client's timeouts
    done = rewind.recover(settings, args.since, timedelta(seconds=args.margin_s), dry_run=args.dry_run)
    if args.json:
        json_compact_out(
            {
                "topic": done.topic,
                "since": done.since.isoformat(),
                "start": done.start.isoformat(),
                "applied": done.applied,
                "replayed": done.replayed,
                "partitions": [{**vars(p), "replayed": p.replayed} for p in done.partitions],
            }
        )
        return cli_args.OK
    verb = "rewound" if done.applied else "would rewind (dry run)"
    out(f"{verb} {', '.join(done.groups)} on {done.topic} to {done.start.isoformat(timespec='seconds')}")
    for p in done.partitions:
        move = "left" if p.new is None else f"-> {p.new}"
        out(f"  {p.group:32} [{p.partition}] committed {p.committed} {move} ({p.replayed} to replay)")
    out(f"{done.replayed} message(s) to replay; start the worker (the ledger dedupes what it already holds)")
    return cli_args.OK


def _show(b: backup.Backup, verb: str, as_json: bool) -> None:
    if as_json:
        json_compact_out({"path": str(b.path), "started": b.started, "finished": b.finished, "done": verb})
    else:
        out(f"{verb} {b.path} (backup started {b.started.isoformat()}, finished {b.finished.isoformat()})")


def cmd_backup(_settings: Settings, args: argparse.Namespace) -> int:
    _show(backup.take_backup(Stack.local()), "backed up to", args.json)
    return cli_args.OK


def cmd_restore(_settings: Settings, args: argparse.Namespace) -> int:
    # No backup finished before TIME, or TIME past the newest archived WAL: `Refused`, exit 2.
    _show(backup.restore(Stack.local(), args.to), f"restored to {args.to.isoformat()} from", args.json)
    if not args.json:
        out("then: `opsmantik recover --since TIME` with the worker stopped (docs/runbook.md)")
    return cli_args.OK


def cmd_restore_point(settings: Settings, args: argparse.Namespace) -> int:
    require_kafka(settings)
    point = status.restore_point(settings, Stack.local())
    if args.prom:
        status.write_prom(args.prom, point)
    if args.json:
        json_compact_out(vars(point))
    else:
        out(f"newest restorable point: {point.newest_restorable or 'none (no backup)'}")
        out(f"oldest backup:           {point.oldest_backup or 'none'}")
        out(f"topic retention:         {point.topic_retention_s or 'unlimited'} s")
    return cli_args.OK
