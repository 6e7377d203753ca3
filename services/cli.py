"""`opsmantik`: the one command-line entry point. Output is for people; `--json` for programs."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Any

import asyncpg

from services import sites, stack
from services.config import Settings, SettingsError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, default=str, indent=None))


async def _connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.database_url)


def _with_conn(fn: Callable[[asyncpg.Connection, argparse.Namespace], Coroutine[Any, Any, int]]):
    async def run(settings: Settings, args: argparse.Namespace) -> int:
        conn = await _connect(settings)
        try:
            return await fn(conn, args)
        finally:
            await conn.close()

    return run


# ---------------------------------------------------------------- stack


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from services.stack_cli import main as stack_main

    return stack_main(settings, args)


# ---------------------------------------------------------------- migrate


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from services.db.migrate import migrate
    from services.kafka import TopicError, ensure_topics

    conn = await _connect(settings)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    try:
        topics = await asyncio.to_thread(ensure_topics, settings)
    except TopicError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json({"applied": applied, "topics_created": topics})
    else:
        print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
        print(f"topics created: {', '.join(topics) or 'none (present)'}")
    return 0


# ---------------------------------------------------------------- sites and keys


@_with_conn
async def cmd_sites_create(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    key = await sites.create_site_with_key(
        conn, args.name, monthly_quota=args.monthly_quota, hard_cap=args.hard_cap,
        rate=args.rate, burst=args.burst,
    )
    if args.json:
        _print_json({"site_id": str(key.site_id), "api_key": key.api_key, "key_id": str(key.key_id)})
    else:
        print(f"site_id: {key.site_id}\napi_key: {key.api_key}\n(the key is shown only once; store it now)")
    return 0


@_with_conn
async def cmd_sites_list(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    rows = await sites.list_sites(conn)
    if args.json:
        _print_json([asdict(s) for s in rows])
        return 0
    print(f"{'site_id':36}  {'name':20} {'quota':>10} {'hard_cap':>10} {'rate':>8} {'burst':>6} keys")
    for s in rows:
        print(f"{s.site_id}  {s.name[:20]:20} {s.monthly_quota or '-':>10} {s.hard_cap or '-':>10} "
              f"{s.rate_per_s:>8g} {s.burst:>6} {s.active_keys}")
    return 0


@_with_conn
async def cmd_keys_create(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    key = await sites.create_key(conn, args.site_id)
    if args.json:
        _print_json({"site_id": str(key.site_id), "key_id": str(key.key_id), "api_key": key.api_key})
    else:
        print(f"key_id: {key.key_id}\napi_key: {key.api_key}\n(the key is shown only once)")
    return 0


@_with_conn
async def cmd_keys_revoke(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    if not await sites.revoke_key(conn, args.key_id):
        print(f"no active key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id} (gateways stop accepting it within their key cache TTL)")
    return 0


# ---------------------------------------------------------------- services


def _service(module: str) -> Callable[[Settings, argparse.Namespace], int]:
    """Import a service lazily: `opsmantik stack status` should not load Faust."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).main(settings, args)

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opsmantik", description="OpsMantik Revenue Kernel")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stack", help="local Kafka + Postgres under .local/")
    s.add_argument("action", choices=["up", "down", "status", "env"])
    s.add_argument("--json", action="store_true")
    s.add_argument("--brokers", type=int, help="up: Kafka brokers (default 1; 3 = a KRaft cluster)")
    s.set_defaults(func=cmd_stack)

    s = sub.add_parser("migrate", help="apply schemas/ migrations and create the topics (idempotent)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_migrate)

    sites_p = sub.add_parser("sites", help="tenants").add_subparsers(dest="action", required=True)
    s = sites_p.add_parser("create", help="create a site and its first API key")
    s.add_argument("name")
    s.add_argument("--monthly-quota", type=int, help="soft quota: events past it are `overlimit`")
    s.add_argument("--hard-cap", type=int, help="hard cap: the gateway answers 429 once reached")
    s.add_argument("--rate", type=float, default=1000.0, help="requests/s (default 1000)")
    s.add_argument("--burst", type=int, default=2000, help="requests (default 2000)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sites_create)
    s = sites_p.add_parser("list")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sites_list)

    keys_p = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    s = keys_p.add_parser("create", help="a new key for a site (shown once)")
    s.add_argument("site_id", type=uuid.UUID)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_keys_create)
    s = keys_p.add_parser("revoke")
    s.add_argument("key_id", type=uuid.UUID)
    s.set_defaults(func=cmd_keys_revoke)

    s = sub.add_parser("gateway", help="the HTTP ingest gateway")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int, default=1, help="gateway processes on the port (SO_REUSEPORT)")
    s.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set by --workers
    s.set_defaults(func=_service("services.gateway.main"))
    sub.add_parser("worker", help="the ledger worker (Faust)").set_defaults(
        func=_service("services.worker.main"))
    sub.add_parser("relay", help="drains the outbox to Kafka").set_defaults(
        func=_service("services.relay.main"))
    s = sub.add_parser("run", help="stack + migrate + demo site + gateway + worker + relay")
    s.add_argument("--port", type=int)
    s.add_argument("--gateway-workers", type=int, help="gateway processes (default: one per core)")
    s.set_defaults(func=_service("services.run"))

    s = sub.add_parser("reconcile", help="invoice vs ledger; exit 1 on drift")
    s.add_argument("--month", required=True, help="YYYY-MM")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_service("services.reconcile"))
    s = sub.add_parser("slo-report", help="the SLO figures for a month")
    s.add_argument("--month", required=True, help="YYYY-MM")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_service("services.slo"))
    _billing_commands(sub)
    return p


def _billing_commands(sub: Any) -> None:
    """billing close|verify, events void, sla-report, maintenance add|list (docs/billing.md)."""
    billing_p = sub.add_parser("billing", help="month close and export verification").add_subparsers(
        dest="action", required=True)
    s = billing_p.add_parser("close", help="freeze a month's invoice and record its statements")
    s.add_argument("--month", required=True, help="YYYY-MM")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_service("services.billing.close"))
    s = billing_p.add_parser("verify", help="recompute an export's SHA-256 offline; exit 1 on mismatch")
    s.add_argument("file", help="the export (NDJSON or CSV), - for stdin")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_service("services.billing.verify"))
    events_p = sub.add_parser("events", help="ledger corrections").add_subparsers(dest="action",
                                                                                  required=True)
    s = events_p.add_parser("void", help="void an event (append-only entry; off the invoice)")
    s.add_argument("site_id", type=uuid.UUID)
    s.add_argument("event_id", nargs="?", help="the event to void (or --file)")
    s.add_argument("--file", help="event_ids to void, one a line (- for stdin): all or nothing")
    s.add_argument("--reason", required=True)
    s.add_argument("--by", help="who voids (default: the login name)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_service("services.billing.voids"))
    s = sub.add_parser("sla-report", help="SLA §2.1/§1/§3 per site; exit 1 if a credit is owed")
    s.add_argument("--month", required=True, help="YYYY-MM")
    s.add_argument("--site", type=uuid.UUID)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_service("services.sla.report"))
    maint_p = sub.add_parser("maintenance", help="announced maintenance windows").add_subparsers(
        dest="action", required=True)
    s = maint_p.add_parser("add", help="announce a window (refused unless it starts >= 48 h from now)")
    s.add_argument("start", help="RFC 3339 with offset, e.g. 2026-12-01T02:00:00Z")
    s.add_argument("end")
    s.add_argument("--reason", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_service("services.sla.maintenance"))
    s = maint_p.add_parser("list", help="windows ending from now on (--all: every window)")
    s.add_argument("--all", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_service("services.sla.maintenance"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        result = args.func(settings, args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except stack.StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
