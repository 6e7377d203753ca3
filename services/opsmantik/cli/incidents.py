"""`opsmantik incident open|update|resolve|list`: the incidents on the status page.

    opsmantik incident open "Delayed usage counts" --impact minor --component ledger_freshness \
        --message "Usage counts are behind; no event is lost." [--status investigating] [--json]
    opsmantik incident update ID --status identified --message "..." [--impact major]
    opsmantik incident resolve ID --message "..."
    opsmantik incident list [--all] [--json]

The page shows a change within `status_slo_refresh_s` (60 s by default). A resolved incident is
final: update or resolve it again and the command exits 1 (open a new one instead).
"""

from __future__ import annotations

import argparse

import asyncpg
import orjson

from opsmantik.cli import args as cli_args
from opsmantik.config import Settings
from opsmantik.db.queries import package_queries
from opsmantik.errors import NotFound, UsageError
from opsmantik.status.components import COMPONENT_IDS

Q = package_queries("opsmantik.status", "status.sql")
IMPACTS = ("none", "minor", "major", "critical")
OPEN_STATUSES = ("investigating", "identified", "monitoring")
MAX_NAME, MAX_BODY = 200, 2000


def _message(raw: str) -> str:
    if not 1 <= len(raw.strip()) <= MAX_BODY or "\x00" in raw:
        raise ValueError(f"must be 1-{MAX_BODY} characters without NUL")
    return raw


MESSAGE = cli_args.Arg("a message", _message, "Usage counts are behind.", ("", " ", "x" * (MAX_BODY + 1)))
INCIDENT_ID = cli_args.integer(1, cli_args.INT64_MAX, "an incident id (opsmantik incident list)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The parser (services/opsmantik/cli/main.py calls this: one line there)."""
    p = sub.add_parser("incident", help="status page incidents: open, update, resolve, list")
    acts = p.add_subparsers(dest="action", required=True)
    s = acts.add_parser("open", help="open an incident (shown on /status)")
    s.add_argument("name", type=cli_args.NAME, metavar="NAME", help="the title customers see")
    s.add_argument(
        "--impact",
        choices=IMPACTS,
        default="minor",
        help="how bad for customers; the page line shows the worst open impact",
    )
    s.add_argument("--status", choices=OPEN_STATUSES, default="investigating", help="where the work stands")
    s.add_argument(
        "--component",
        action="append",
        choices=COMPONENT_IDS,
        default=[],
        help="an affected component (repeat for several)",
    )
    s.add_argument("--message", required=True, type=MESSAGE, help="the first update, for customers")
    s = acts.add_parser("update", help="add an update to an open incident")
    s.add_argument("id", type=INCIDENT_ID, metavar="ID", help="the incident's id")
    s.add_argument("--status", choices=OPEN_STATUSES, required=True, help="where the work stands now")
    s.add_argument("--impact", choices=IMPACTS, help="a new impact (default: unchanged)")
    s.add_argument("--message", required=True, type=MESSAGE, help="the update, for customers")
    s = acts.add_parser("resolve", help="resolve an open incident")
    s.add_argument("id", type=INCIDENT_ID, metavar="ID", help="the incident's id")
    s.add_argument("--message", required=True, type=MESSAGE, help="the closing update, for customers")
    s = acts.add_parser("list", help="open incidents (--all: resolved ones too)")
    s.add_argument("--all", action="store_true", help="resolved incidents too")
    for name, a in acts.choices.items():
        a.add_argument("--json", action="store_true", help="machine-readable output")
        exit1 = (
            "no open incident with that id (unknown, or already resolved)"
            if name in ("update", "resolve")
            else None
        )
        a.set_defaults(func=main, env=("database_url",), exit1=exit1)


def _check_text(args: argparse.Namespace) -> str | None:
    name = getattr(args, "name", None)
    if name is not None and not 1 <= len(name.strip()) <= MAX_NAME:
        return f"name: 1 to {MAX_NAME} characters"
    msg = getattr(args, "message", None)
    if msg is not None and not 1 <= len(msg.strip()) <= MAX_BODY:
        return f"--message: 1 to {MAX_BODY} characters"
    return None


async def run(settings: Settings, args: argparse.Namespace) -> int:
    problem = _check_text(args)
    if problem:
        raise UsageError(problem)
    # An unreachable or unmigrated database ends here with the CLI's one-line messages
    # (services/opsmantik/cli/errors.py: exit 3 naming `opsmantik stack up` or `opsmantik migrate`).
    conn = await asyncpg.connect(settings.database_url, timeout=5)
    try:
        return await _act(conn, args)
    finally:
        await conn.close()


async def _act(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = await conn.fetch(Q["list_incidents"], args.all)
        out = [{**dict(r), "components": list(r["components"])} for r in rows]
        if args.json:
            print(orjson.dumps(out).decode())
        else:
            for r in out:
                print(f"#{r['id']:<5} {r['status']:13} {r['impact']:8} {r['name']}")
            if not out:
                print("no open incidents")
        return 0
    async with conn.transaction():
        if args.action == "open":
            incident_id = await conn.fetchval(
                Q["open_incident"],
                args.name.strip(),
                args.impact,
                args.status,
                sorted(set(args.component)),
                args.message.strip(),
            )
            status = args.status
        else:
            status = "resolved" if args.action == "resolve" else args.status
            incident_id = await conn.fetchval(
                Q["update_incident"], args.id, status, getattr(args, "impact", None)
            )
            if incident_id is None:
                raise NotFound(f"no open incident #{args.id} (unknown, or already resolved)")
            await conn.fetchval(Q["add_incident_update"], incident_id, status, args.message.strip())
    if args.json:
        print(orjson.dumps({"id": incident_id, "status": status}).decode())
    else:
        print(f"incident #{incident_id}: {status} (on the status page within a minute)")
    return 0


def main(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(run(settings, args))
