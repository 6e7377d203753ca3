"""The billing commands' printing and exit codes: reconcile, archive, billing close|verify, events void.

The work is in services/opsmantik/billing/ (it returns results or raises from
services/opsmantik/errors.py); this module turns a result into text or --json and an exit code.
"""

from __future__ import annotations

import argparse

from opsmantik.billing import archive, close, reconcile, verify, voids
from opsmantik.billing.archive_files import ArchiveTampered
from opsmantik.cli.args import CHECK_FAILED, OK
from opsmantik.cli.show import err, json_compact_out, json_out, out
from opsmantik.config import Settings
from opsmantik.errors import CheckFailed, UsageError
from opsmantik.months import label


async def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    report, backlog = await reconcile.reconcile_now(settings, args.month)
    if args.json:
        json_compact_out(
            {**report.as_dict(), "backlog": backlog.as_dict(), "backlog_ok": not backlog.needs_attention}
        )
    else:
        out(
            reconcile.render(report)
            + "\n"
            + backlog.render()
            + ("  ATTENTION" if backlog.needs_attention else "")
        )
    return OK if report.ok and not backlog.needs_attention else CHECK_FAILED


async def cmd_archive(settings: Settings, args: argparse.Namespace) -> int:
    location = args.to or settings.archive_location
    try:
        done = await archive.archive_now(settings, args.month, location, emit=err)  # progress: stderr
    except ArchiveTampered as exc:
        raise CheckFailed(f"archive NOT verified (partition kept): {exc}") from exc
    if args.json:
        json_out(done)
    else:
        out(
            f"archived {done['month']}: {done['rows']} rows, {done['bytes']} bytes "
            f"({done['bytes_per_row']} per row) to {done['file']}; {done['statements_verified']} "
            f"statement(s) verified; partition {done['partition_dropped']} dropped"
        )
    return OK


async def cmd_close(settings: Settings, args: argparse.Namespace) -> int:
    c = await close.close_month(settings, args.month)
    if args.json:
        json_compact_out(
            {
                "month": label(c.month),
                "closed_at": c.closed_at.isoformat(),
                "newly_closed": c.newly_closed,
                "statements": c.statements,
                "drift": [
                    {"site_id": str(d.site_id), "ledger": d.ledger, "invoice": d.invoice} for d in c.drifts
                ],
            }
        )
    else:
        out(
            f"{label(c.month)} {'closed' if c.newly_closed else 'already closed'} at "
            f"{c.closed_at.isoformat()}; {len(c.statements)} statement(s)"
        )
        for s in c.statements:
            out(
                f"  {s['site_id']}  {(s['name'] or '?')[:16]:16} events {s['events']:>10} quantity "
                f"{s['quantity']:>12} voids {s['voids']:>5} late {s['late_rows']:>5}  sha256 {s['sha256']}"
            )
        for d in c.drifts:
            out(f"DRIFT site {d.site_id}: invoice {d.invoice} != ledger {d.ledger}; statement not recorded")
    return CHECK_FAILED if c.drifts else OK


def cmd_verify(_settings: object, args: argparse.Namespace) -> int:
    res = verify.verify_file(args.file)
    s = res.summary or {}
    if args.json:
        json_out(
            {
                "ok": res.ok,
                "entries": res.entries,
                "sha256": res.sha256,
                "site_id": s.get("site_id"),
                "month": s.get("month"),
                "statement": s.get("statement"),
                "problems": res.problems,
            }
        )
    elif res.ok:
        st = s.get("statement")
        out(
            f"MATCH: {res.entries} entries of site {s.get('site_id')} for {s.get('month')}, sha256 "
            f"{res.sha256}"
            + (
                f" = the statement recorded at {st.get('closed_at')}"
                if st
                else " (month not closed: no statement yet)"
            )
        )
    else:
        out("MISMATCH:\n" + "\n".join(f"  {p}" for p in res.problems))
    return OK if res.ok else CHECK_FAILED


def _void_ids(args: argparse.Namespace) -> list[str]:
    if (args.event_id is None) == (args.file is None):
        raise UsageError("give exactly one of EVENT_ID or --file FILE")
    if args.event_id is not None:
        return [args.event_id]
    try:
        return voids.read_ids(args.file)
    except OSError as exc:
        raise UsageError(f"--file: {exc}") from exc


async def cmd_void(settings: Settings, args: argparse.Namespace) -> int:
    ids = _void_ids(args)
    try:
        done = await voids.void_now(settings, args.site_id, ids, args.reason, args.by or voids.login_name())
    except voids.VoidRefused as exc:  # every problem listed, one a line: not the one-line boundary
        if args.json:
            json_compact_out({"ok": False, "voided": [], "problems": exc.problems})
        for p in exc.problems:
            err(f"refused: {p}")
        err("nothing was voided")
        return CHECK_FAILED
    if args.json:
        json_compact_out({"ok": True, "voided": [_voided(v) for v in done], "problems": []})
        return OK
    for v in done:
        where = (
            f"negative adjustment in {label(v.booked_month)} ({label(v.billed_month)} is closed)"
            if v.adjustment
            else f"off the {label(v.billed_month)} invoice"
        )
        out(f"voided {v.event_id}: quantity {v.quantity}, {where}")
    return OK


def _voided(v: voids.Voided) -> dict[str, object]:
    return {
        "event_id": v.event_id,
        "billed_month": label(v.billed_month),
        "booked_month": label(v.booked_month),
        "adjustment": v.adjustment,
        "quantity": v.quantity,
        "voided_at": v.voided_at.isoformat(),
    }
