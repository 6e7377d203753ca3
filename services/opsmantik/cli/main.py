"""`opsmantik`: the one command-line entry point. Output is for people; `--json` for programs.

One mechanism for every command (services/opsmantik/cli/args.py, services/opsmantik/cli/errors.py):
arguments are
parsed by validating types (a bad value is one line on stderr and exit 2), and `main` is the one
error boundary that maps whatever a command ends with to an exit code and one line, never a
traceback. Exit codes: 0 ok, 1 the check found a problem, 2 usage error, 3 could not run.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Any

import asyncpg

from opsmantik import sites
from opsmantik.cli import alerts as alerts_cli
from opsmantik.cli import args as cli_args
from opsmantik.cli import incidents, recovery
from opsmantik.cli import meters as meters_cli
from opsmantik.cli.args import Parser
from opsmantik.cli.errors import classify, require_kafka
from opsmantik.cli.show import err, json_out, out
from opsmantik.config import Settings
from opsmantik.errors import NotFound, Unavailable


async def _connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.database_url, timeout=5)


def _with_conn(
    fn: Callable[[asyncpg.Connection, argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]:
    async def run(settings: Settings, args: argparse.Namespace) -> int:
        conn = await _connect(settings)
        args.key_secret = settings.key_secret  # keys are minted under the gateways' secret
        try:
            return await fn(conn, args)
        finally:
            await conn.close()

    return run


# ---------------------------------------------------------------- stack


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from opsmantik.devstack.commands import main as stack_main

    return stack_main(settings, args)


# ---------------------------------------------------------------- migrate


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from opsmantik.db.migrate import migrate
    from opsmantik.kafka.topics import ensure_topics

    require_kafka(settings)  # before touching the database: all or nothing, and in a second
    conn = await _connect(settings)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    topics = await asyncio.to_thread(ensure_topics, settings)  # TopicError: exit 1
    if args.json:
        json_out({"applied": applied, "topics_created": topics})
    else:
        out(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
        out(f"topics created: {', '.join(topics) or 'none (present)'}")
    return 0


# ---------------------------------------------------------------- sites and keys


@_with_conn
async def cmd_sites_create(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    key = await sites.create_site_with_key(
        conn,
        args.name,
        monthly_quota=args.monthly_quota,
        hard_cap=args.hard_cap,
        rate=args.rate,
        burst=args.burst,
        secret=args.key_secret,
    )
    if args.json:
        json_out({"site_id": str(key.site_id), "api_key": key.api_key, "key_id": str(key.key_id)})
    else:
        out(f"site_id: {key.site_id}\napi_key: {key.api_key}\n(the key is shown only once; store it now)")
    return 0


@_with_conn
async def cmd_sites_list(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    rows = await sites.list_sites(conn)
    if args.json:
        json_out([asdict(s) for s in rows])
        return 0
    out(f"{'site_id':36}  {'name':20} {'quota':>10} {'hard_cap':>10} {'rate':>8} {'burst':>6} keys")
    for s in rows:
        out(
            f"{s.site_id}  {s.name[:20]:20} {s.monthly_quota or '-':>10} {s.hard_cap or '-':>10} "
            f"{s.rate_per_s:>8g} {s.burst:>6} {s.active_keys}"
        )
    return 0


@_with_conn
async def cmd_keys_create(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    key = await sites.create_key(conn, args.site_id, secret=args.key_secret)  # UnknownSite: exit 2
    if args.json:
        json_out({"site_id": str(key.site_id), "key_id": str(key.key_id), "api_key": key.api_key})
    else:
        out(f"key_id: {key.key_id}\napi_key: {key.api_key}\n(the key is shown only once)")
    return 0


@_with_conn
async def cmd_keys_revoke(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    if not await sites.revoke_key(conn, args.key_id):
        raise NotFound(f"no active key {args.key_id}")
    out(f"revoked {args.key_id} (gateways stop accepting it within their key cache TTL)")
    return 0


# ---------------------------------------------------------------- services


def _service(module: str, func: str = "main") -> Callable[[Settings, argparse.Namespace], Any]:
    """Import a command lazily: `opsmantik stack status` should not load Faust, nor `keys create`
    pyarrow. Long-running services (gateway, worker, relay, run) are `main` of their module; the
    other commands live in services/opsmantik/cli/ (billing.py, reports.py). The result is an exit
    code or a coroutine `main` runs to one."""

    def run(settings: Settings, args: argparse.Namespace) -> Any:
        import importlib

        return getattr(importlib.import_module(module), func)(settings, args)

    return run


DB = ("database_url",)
KAFKA = ("kafka_bootstrap", "topic", "billable_topic")
GATEWAY_ENV = (
    "gateway_host",
    "gateway_port",
    *DB,
    *KAFKA[:2],
    "max_body_bytes",
    "max_batch_events",
    "delivery_timeout_ms",
    "key_cache_ttl_s",
    "unknown_key_ttl_s",
    "key_secret",
    "key_secret_previous",
    "legacy_keys",
    "unknown_key_lookups_per_s",
    "unknown_key_lookup_burst",
    "auth_failures_undelayed_per_s",
    "auth_failure_delay_s",
    "usage_refresh_s",
    "usage_stale_s",
    "gateway_heartbeat_s",
    "gateway_dead_after_s",
    "partition_key",
    "db_pool_max",
    "cloudevents_quantity",
)
WORKER_ENV = (
    *DB,
    *KAFKA,
    "topic_partitions",
    "worker_group",
    "worker_batch",
    "metrics_host",
    "worker_metrics_port",
    "worker_retry_max_s",
    "worker_watchdog_s",
    "worker_data_dir",
    "reconcile_interval_s",
    "db_pool_min",
    "db_pool_max",
)
AUDIT_ENV = (*KAFKA[:2], "worker_group", "audit_group")
RELAY_ENV = (
    *DB,
    *KAFKA[:2],
    "partition_key",
    "relay_batch",
    "relay_idle_s",
    "metrics_host",
    "relay_metrics_port",
)
JSON_HELP = "print one JSON document (for programs) instead of text"


def build_parser() -> argparse.ArgumentParser:
    """Every command. Types from cli_args validate; set_defaults(env=..., exit1=...) feed the help
    epilog (cli_args.finish) and the README's CLI table (services/opsmantik/cli/docs.py)."""
    p = Parser(
        prog="opsmantik",
        description="OpsMantik Revenue Kernel: ingest, ledger and billing.",
        epilog="exit codes (each command's --help says what 1 means for it):\n"
        + "\n".join(f"  {c}  {m}" for c, m in cli_args.EXIT_CODES.items()),
    )
    p.add_argument(
        "--debug", action="store_true", help="on an unexpected error, show the traceback instead of one line"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "stack",
        help="the local Kafka + Postgres under .local/ (up is idempotent and "
        "waits for readiness; down stops cleanly; env prints the export lines)",
    )
    s.add_argument("action", choices=["up", "down", "status", "env"], help="what to do")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.add_argument(
        "--brokers",
        type=cli_args.integer(1, 9, "a broker count from 1 to 9"),
        metavar="N",
        help="up: Kafka brokers (default: the count last recorded, else 1; 3 = a KRaft "
        "cluster, docs/scaling.md)",
    )
    s.add_argument(
        "--standby",
        action="store_true",
        help="up: also a synchronous streaming standby of Postgres (port 15433; every commit waits "
        "for it; docs/reliability.md)",
    )
    s.set_defaults(func=cmd_stack, env=("kafka_heap",))

    s = sub.add_parser(
        "migrate",
        help="apply schemas/postgres/ migrations and create the topics (idempotent)",
    )
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=cmd_migrate,
        env=(*DB, *KAFKA, "topic_partitions", "replication_factor", "min_insync_replicas"),
        exit1="an applied migration was edited (add a new one instead), or a topic has "
        "fewer partitions than configured",
    )

    sites_p = sub.add_parser("sites", help="tenants").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    s = sites_p.add_parser("create", help="create a site and its first API key (shown once)")
    s.add_argument("name", type=cli_args.NAME, metavar="NAME", help="the site's name, 1-200 characters")
    s.add_argument(
        "--monthly-quota",
        type=cli_args.QUOTA,
        metavar="N",
        help="soft quota: events past it are `overlimit` (default: none)",
    )
    s.add_argument(
        "--hard-cap",
        type=cli_args.HARD_CAP,
        metavar="N",
        help="hard cap, >= 1: the gateway answers 429 once reached (default: none)",
    )
    s.add_argument("--rate", type=cli_args.RATE, default=1000.0, metavar="R", help="requests/s")
    s.add_argument("--burst", type=cli_args.BURST, default=2000, metavar="N", help="requests")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=cmd_sites_create, env=(*DB, "key_secret"))
    s = sites_p.add_parser("list", help="sites with their limits and active key count")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=cmd_sites_list, env=DB)

    keys_p = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    s = keys_p.add_parser("create", help="a new key for a site (shown once)")
    s.add_argument(
        "site_id", type=cli_args.UUID, metavar="SITE_ID", help="the site's id (`opsmantik sites list`)"
    )
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=cmd_keys_create, env=(*DB, "key_secret"))  # no such site: exit 2
    s = keys_p.add_parser(
        "revoke", help="revoke a key (gateways stop accepting it within their key cache TTL)"
    )
    s.add_argument("key_id", type=cli_args.UUID, metavar="KEY_ID", help="the key's id")
    s.set_defaults(func=cmd_keys_revoke, env=DB, exit1="no active key with that id")

    tokens_p = sub.add_parser("tokens", help="operator tokens (read every site's data)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    s = tokens_p.add_parser("create", help="a new operator token (shown once; only its hash is stored)")
    s.add_argument("--operator", action="store_true", required=True, help="an operator token (the one kind)")
    s.add_argument(
        "--name", type=cli_args.NAME, default="operator", metavar="N", help="a label, 1-200 characters"
    )
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=_service("opsmantik.cli.tokens", "cmd_create"), env=(*DB, "key_secret"))
    s = tokens_p.add_parser("list", help="operator tokens: id, prefix, name, active or revoked")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=_service("opsmantik.cli.tokens", "cmd_list"), env=DB)
    s = tokens_p.add_parser("revoke", help="revoke a token (refused from the gateways' next request)")
    s.add_argument("token_id", type=cli_args.UUID, metavar="TOKEN_ID", help="the token's id")
    s.set_defaults(
        func=_service("opsmantik.cli.tokens", "cmd_revoke"), env=DB, exit1="no active token with that id"
    )

    s = sub.add_parser(
        "portal-token",
        help="a signed link to a site's live usage dashboard (/dashboard?token=...; docs/dashboard.md)",
    )
    s.add_argument("site_id", type=cli_args.UUID, metavar="SITE", help="the site the token opens")
    s.add_argument(
        "--ttl", type=cli_args.TTL, default="1h", metavar="D", help="lifetime: 15m, 1h, 7d (1 min to 30 days)"
    )
    s.add_argument("--revoke", type=cli_args.UUID, metavar="TOKEN_ID", help="revoke one of the site's tokens")
    s.add_argument("--revoke-all", action="store_true", help="revoke every token of the site")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=_service("opsmantik.cli.portal"),
        env=(*DB, "key_secret", "dashboard_base_url"),
        exit1="no active portal token with that id (--revoke)",
    )

    s = sub.add_parser(
        "gateway", help="the HTTP ingest gateway (POST /api/sync, POST /api/v1/events), in the foreground"
    )
    s.add_argument(
        "--host",
        type=cli_args.HOST,
        help="address to listen on (default: $OPSMANTIK_GATEWAY_HOST, else 127.0.0.1)",
    )
    s.add_argument(
        "--port", type=cli_args.PORT, help="port to listen on (default: $OPSMANTIK_GATEWAY_PORT, else 8080)"
    )
    s.add_argument(
        "--workers",
        type=cli_args.integer(1, 256, "a process count from 1 to 256"),
        default=1,
        metavar="N",
        help="gateway processes on the port (SO_REUSEPORT); they share each "
        "site's rate limit (docs/scaling.md)",
    )
    s.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set by --workers
    s.set_defaults(func=_service("opsmantik.gateway.main"), env=GATEWAY_ENV)
    s = sub.add_parser("worker", help="the ledger worker (Faust), in the foreground")
    s.set_defaults(func=_service("opsmantik.worker.main"), env=WORKER_ENV)
    s = sub.add_parser("relay", help="drains the Postgres outbox to Kafka, in the foreground")
    s.set_defaults(func=_service("opsmantik.relay.main"), env=RELAY_ENV)
    s = sub.add_parser(
        "run",
        help="stack + migrate + demo site + gateway + worker + relay + audit, in the "
        "foreground (`make run`); Ctrl-C stops everything",
    )
    s.add_argument(
        "--port", type=cli_args.PORT, help="the gateway's port (default: $OPSMANTIK_GATEWAY_PORT, else 8080)"
    )
    s.add_argument(
        "--gateway-workers",
        type=cli_args.integer(1, 256, "a process count from 1 to 256"),
        metavar="N",
        help="gateway processes (default: one per core)",
    )
    s.set_defaults(
        func=_service("opsmantik.devstack.run"),
        env=("gateway_port", *DB, *KAFKA, "kafka_heap"),
        exit1="a service kept exiting (more than 5 restarts a minute)",
    )

    s = sub.add_parser("reconcile", help="invoice vs ledger per site for a month")
    s.add_argument("--month", required=True, type=cli_args.MONTH, metavar="YYYY-MM", help="the billing month")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=_service("opsmantik.cli.billing", "cmd_reconcile"),
        env=DB,
        exit1="drift: a site's invoice differs from its ledger (the site is named)",
    )
    s = sub.add_parser(
        "archive",
        help="write a closed month's ledger partition to Parquet beside its statements, verify it, "
        "drop the partition (docs/billing.md)",
    )
    s.add_argument("--month", required=True, type=cli_args.MONTH, metavar="YYYY-MM", help="the usage month")
    s.add_argument("--to", metavar="DIR_OR_URL", help="a directory or fsspec URL (default: the setting)")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=_service("opsmantik.cli.billing", "cmd_archive"),
        env=(*DB, "archive_location"),
        exit1="the written file did not verify against the statements: partition kept",
    )
    s = sub.add_parser("slo-report", help="the SLO figures for a month")
    s.add_argument("--month", required=True, type=cli_args.MONTH, metavar="YYYY-MM", help="the month")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=_service("opsmantik.cli.reports", "cmd_slo_report"),
        env=(*DB, *AUDIT_ENV),
        exit1="an objective is breached",
    )
    s = sub.add_parser(
        "audit",
        help="the capture audit: every ingest-topic message the worker committed "
        "past is in the ledger or the dead letters (docs/reliability.md)",
    )
    s.add_argument(
        "--month",
        type=cli_args.MONTH,
        metavar="YYYY-MM",
        help="catch up, then report this month per site (default: the current month)",
    )
    s.add_argument(
        "--follow",
        action="store_true",
        help="the continuous audit, in the foreground; metrics on $OPSMANTIK_AUDIT_METRICS_PORT",
    )
    s.add_argument(
        "--wait",
        type=cli_args.integer(0, 3600, "seconds from 0 to 3600"),
        help="longest wait for the worker to commit what the topic holds (default: $OPSMANTIK_AUDIT_WAIT_S)",
    )
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=_service("opsmantik.cli.reports", "cmd_audit"),
        env=(*DB, *AUDIT_ENV, "audit_metrics_port", "audit_interval_s", "audit_wait_s"),
        exit1="a message is unaccounted (neither ledgered nor dead-lettered) or a valid "
        "event was dead-lettered (breach)",
    )
    _billing_commands(sub)
    meters_cli.add_commands(sub, JSON_HELP)
    alerts_cli.add_commands(sub, JSON_HELP)
    _send_command(sub)
    incidents.register(sub)
    recovery.register(sub)
    return cli_args.finish(p)


def _send_command(sub: Any) -> None:
    s = sub.add_parser(
        "send",
        help="backfill NDJSON through the producer client (retries, spill, "
        "progress, resumable; docs/client.md)",
    )
    try:
        from opsmantik_client import send_cli
    except ImportError:  # the client is its own distribution: clients/python
        s.add_argument("args", nargs=argparse.REMAINDER, help="see docs/client.md")
        s.set_defaults(func=_client_missing)
        return
    send_cli.add_arguments(s, count=cli_args.integer(1, 64), seconds=cli_args.RATE)
    s.set_defaults(
        func=lambda _settings, args: send_cli.run(args),
        exit1="an event was rejected (4xx); the rejected events are listed",
    )


def _client_missing(_settings: Settings, _args: argparse.Namespace) -> int:
    raise Unavailable(
        "the producer client is not installed: pip install ./clients/python (make deps installs it)"
    )


def _billing_commands(sub: Any) -> None:
    """billing close|verify, events void, sla-report, maintenance add|list (docs/billing.md)."""
    billing_p = sub.add_parser("billing", help="month close and export verification").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    s = billing_p.add_parser(
        "close",
        help="close a month (after a grace period; idempotent) and record "
        "per-site statements with a SHA-256 (docs/billing.md)",
    )
    s.add_argument(
        "--month", required=True, type=cli_args.MONTH, metavar="YYYY-MM", help="the month to close"
    )
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=_service("opsmantik.cli.billing", "cmd_close"),
        env=(*DB, "billing_close_grace_days", "billing_close_lock_timeout_s"),
        exit1="a site's invoice drifted from its ledger: no statement for it (DRIFT)",
    )
    s = billing_p.add_parser(
        "verify",
        help="check a dispute export offline (its SHA-256 and statement), naming the row that differs",
    )
    s.add_argument("file", metavar="FILE", help="the export (NDJSON or CSV), - for stdin")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=_service("opsmantik.cli.billing", "cmd_verify"),
        exit1="the export does not match its summary line or statement (MISMATCH)",
    )
    events_p = sub.add_parser("events", help="ledger corrections").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    s = events_p.add_parser(
        "void",
        help="an append-only void: takes the event off its month's invoice, "
        "or books a negative adjustment in the first open month",
    )
    s.add_argument("site_id", type=cli_args.UUID, metavar="SITE_ID", help="the event's site")
    s.add_argument("event_id", nargs="?", metavar="EVENT_ID", help="the event to void (or --file)")
    s.add_argument("--file", help="event_ids to void, one a line (- for stdin): all or nothing")
    s.add_argument("--reason", required=True, help="why (kept with the void entry)")
    s.add_argument("--by", help="who voids (default: the login name)")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=_service("opsmantik.cli.billing", "cmd_void"),
        env=DB,
        exit1="refused (unknown or already voided event): nothing was voided",
    )
    s = sub.add_parser(
        "sla-report", help="SLA §2.1 reliability, §1 uptime, data loss and the §3 credit per site"
    )
    s.add_argument("--month", required=True, type=cli_args.MONTH, metavar="YYYY-MM", help="the month")
    s.add_argument("--site", type=cli_args.UUID, metavar="SITE_ID", help="one site (default: every site)")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(
        func=_service("opsmantik.cli.reports", "cmd_sla_report"),
        env=(*DB, "sla_loss_audit"),
        exit1="a service credit is owed to a site",
    )
    maint_p = sub.add_parser("maintenance", help="announced maintenance windows").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    s = maint_p.add_parser("add", help="announce a maintenance window (at least 48 h ahead)")
    s.add_argument(
        "start", type=cli_args.TIME, metavar="START", help="RFC 3339 with offset, e.g. 2026-12-01T02:00:00Z"
    )
    s.add_argument("end", type=cli_args.TIME, metavar="END", help="RFC 3339 with offset, after START")
    s.add_argument("--reason", required=True, help="shown with the window")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=_service("opsmantik.cli.reports", "cmd_maintenance"), env=DB)
    s = maint_p.add_parser("list", help="windows ending from now on (--all: every window)")
    s.add_argument("--all", action="store_true", help="every window, past ones too")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=_service("opsmantik.cli.reports", "cmd_maintenance"), env=DB)


def main(argv: list[str] | None = None) -> int:
    """The one error boundary: every command ends here with an exit code and, on failure, one line
    on stderr (services/opsmantik/cli/errors.py maps the exceptions)."""
    args = build_parser().parse_args(argv)  # usage errors: one line, exit 2 (cli_args.Parser)
    name = " ".join(filter(None, ["opsmantik", args.command, getattr(args, "action", None)]))
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        result = args.func(settings, args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        code, message = classify(exc, settings)
        err(f"{name}: {message}")
        return code
