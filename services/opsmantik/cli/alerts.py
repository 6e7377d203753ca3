"""`opsmantik alerts create|list|delete|deliveries|resend` and `opsmantik dispatcher`
(docs/alerts.md): printing and exit codes; the work is in services/opsmantik/alerts/."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

import asyncpg

from opsmantik.alerts import outbox, rules, urls
from opsmantik.cli import args as cli_args
from opsmantik.cli.args import OK
from opsmantik.cli.show import json_out, out
from opsmantik.config import Settings

ENV = ("database_url", "alerts_allow_http", "alerts_allow_private", "alerts_signing_secret")
DISPATCHER_ENV = (
    "database_url",
    "alerts_allow_http",
    "alerts_allow_private",
    "alerts_signing_secret",
    "dispatcher_concurrency",
    "dispatcher_timeout_s",
    "dispatcher_backoff_base_s",
    "dispatcher_backoff_cap_s",
    "dispatcher_retry_for_s",
    "dispatcher_short_retry_for_tests",
    "dispatcher_idle_s",
    "dispatcher_metrics_port",
    "metrics_host",
)
LIMIT = cli_args.integer(1, 10000, "an integer from 1 to 10000")


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if v is not None and not isinstance(v, int | str) else v) for k, v in d.items()}


def _line(r: rules.RuleRow) -> str:
    what = f"{r.meter} >= {r.threshold}" if r.kind == "meter" else r.kind
    return (
        f"{r.rule_id}  {r.site_id}  {what:24} {r.url}  "
        f"pending {r.pending}, delivered {r.delivered}, parked {r.parked}"
    )


async def cmd_alerts(settings: Settings, args: argparse.Namespace) -> int:
    conn = await asyncpg.connect(settings.database_url, timeout=5)
    try:
        return await _run(settings, conn, args)
    finally:
        await conn.close()


async def _run(settings: Settings, conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    if args.action == "create":
        threshold = rules.parse_threshold(args.threshold) if args.threshold is not None else None
        new = await rules.create(
            conn,
            settings.alerts_signing_secret,
            urls.UrlPolicy.of(settings),
            args.site,
            args.url,
            builtin=args.builtin,
            meter=args.meter,
            threshold=threshold,
        )
        if args.json:
            json_out(_plain(asdict(new)))
        else:
            out(
                f"rule_id: {new.rule_id}\nsecret: {new.secret}\n(the secret is shown only once; store it now)"
            )
    elif args.action == "list":
        found = await rules.list_rules(conn, args.site)
        if args.json:
            json_out([_plain(asdict(r)) for r in found])
        else:
            out("\n".join(_line(r) for r in found) or "no alert rules")
    elif args.action == "delete":
        await rules.delete(conn, args.rule_id)
        json_out({"deleted": str(args.rule_id)}) if args.json else out(f"deleted {args.rule_id}")
    elif args.action == "deliveries":
        rows = await outbox.deliveries(conn, args.site, args.status, args.limit)
        if args.json:
            json_out([_plain(asdict(d)) for d in rows])
        else:
            for d in rows:
                out(
                    f"{d.webhook_id}  {d.event_type:26} {d.status:9} attempts {d.attempts}  "
                    f"{d.created_at:%Y-%m-%dT%H:%M:%SZ}  {d.last_error or ''}"
                )
    else:
        await outbox.resend(conn, args.webhook_id)
        json_out({"resent": args.webhook_id}) if args.json else out(f"{args.webhook_id}: queued again")
    return OK


def add_commands(sub: argparse._SubParsersAction, json_help: str) -> None:  # type: ignore[type-arg]
    """Registered by cli/main.py's build_parser."""
    p = sub.add_parser("alerts", help="usage alerts: webhooks when usage crosses a line (docs/alerts.md)")
    alerts_p = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = alerts_p.add_parser("create", help="a rule of a site (its whsec_ signing secret is shown once)")
    s.add_argument("--site", required=True, type=cli_args.UUID, metavar="SITE_ID", help="the site")
    s.add_argument(
        "--builtin", choices=rules.BUILTINS, help="80 %% or 100 %% of the monthly quota, or the hard cap"
    )
    s.add_argument("--meter", metavar="SLUG", help="a COUNT or SUM meter (with --threshold)")
    s.add_argument("--threshold", metavar="N", help="the meter's total per billing period that fires it")
    s.add_argument("--url", required=True, metavar="URL", help="the receiver (https; no private addresses)")
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(func=cmd_alerts, env=ENV)
    s = alerts_p.add_parser("list", help="rules with their delivery counts")
    s.add_argument("--site", type=cli_args.UUID, metavar="SITE_ID", help="one site's rules")
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(func=cmd_alerts, env=ENV)
    s = alerts_p.add_parser("delete", help="delete a rule, its state and its undelivered webhooks")
    s.add_argument("rule_id", type=cli_args.UUID, metavar="RULE_ID", help="the rule")
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(func=cmd_alerts, env=ENV, exit1="no such rule")
    s = alerts_p.add_parser("deliveries", help="webhooks, newest first: pending, delivered or parked")
    s.add_argument("--site", type=cli_args.UUID, metavar="SITE_ID", help="one site's webhooks")
    s.add_argument("--status", choices=outbox.STATUSES, help="only this status")
    s.add_argument("--limit", type=LIMIT, default=100, metavar="N", help="at most N rows (1-10000)")
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(func=cmd_alerts, env=ENV)
    s = alerts_p.add_parser("resend", help="queue a webhook again (a parked one), same webhook-id")
    s.add_argument("webhook_id", metavar="WEBHOOK_ID", help="msg_… (alerts deliveries)")
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(func=cmd_alerts, env=ENV, exit1="no such webhook")
    s = sub.add_parser("dispatcher", help="delivers the usage alerts' webhooks, in the foreground")
    s.set_defaults(func=_dispatcher, env=DISPATCHER_ENV)


def _dispatcher(settings: Settings, args: argparse.Namespace) -> int:
    from opsmantik.alerts.dispatcher import main

    return main(settings, args)
