"""The reports' printing and exit codes: slo-report, sla-report, maintenance add|list, audit.

The work is in services/opsmantik/sla/ and services/opsmantik/audit/ (results, or errors from
services/opsmantik/errors.py); this module turns a result into text or --json and an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime

from opsmantik.audit import main as audit
from opsmantik.audit.reader import LIBRDKAFKA_LOGGER
from opsmantik.audit.report import render as render_audit
from opsmantik.cli.args import CHECK_FAILED, OK
from opsmantik.cli.show import json_compact_out, out
from opsmantik.config import Settings
from opsmantik.errors import UsageError
from opsmantik.months import month_of
from opsmantik.sla import maintenance, report, slo


async def cmd_slo_report(settings: Settings, args: argparse.Namespace) -> int:
    snap = await slo.slo_report(settings, args.month)
    if args.json:
        json_compact_out(snap)
    else:
        out(slo.render(args.month, snap))
    return OK if slo.all_met(snap) else CHECK_FAILED


async def cmd_sla_report(settings: Settings, args: argparse.Namespace) -> int:
    r = await report.sla_report(settings, args.month, args.site)
    if args.json:
        json_compact_out(r.as_dict())
    else:
        out(r.render())
    return CHECK_FAILED if r.credit_owed else OK


async def cmd_maintenance(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "add":
        window = await maintenance.add_window(settings, args.start, args.end, args.reason)
        if args.json:
            json_compact_out(window)
        windows = [window]
    else:
        windows = await maintenance.list_windows(settings, args.all)
        if args.json:
            json_compact_out(windows)
    if not args.json:
        for w in windows:
            out(f"#{w['id']} {w['starts_at']} → {w['ends_at']}  {w['reason']}")
    return OK


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    if args.follow and (args.month or args.wait is not None or args.json):
        raise UsageError("--follow takes none of --month, --wait, --json (see --help)")
    if args.follow:  # the continuous audit: a long-running process that logs, never prints
        import uvloop

        return uvloop.run(audit.follow(settings))
    # One-shot: the verdict is the output; librdkafka's own connection errors would only repeat it.
    logging.getLogger(LIBRDKAFKA_LOGGER).setLevel(logging.CRITICAL)
    month = args.month or month_of(datetime.now(UTC))
    wait_s = settings.audit_wait_s if args.wait is None else float(args.wait)
    result = asyncio.run(audit.one_shot(settings, month, wait_s))
    if args.json:
        json_compact_out(result.as_dict())
    else:
        out(render_audit(result))
    return OK if result.ok else CHECK_FAILED
