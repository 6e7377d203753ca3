"""The month's SLO figures (seed §1) in words, against their targets (pure: rows in, text out).

The page reads only rollups (slo_requests, slo_freshness), the outbox, dead letters and the latest
reconcile run: never the ledger itself. `opsmantik slo-report` and `opsmantik audit` are the full
checks; the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SloFigure:
    id: str
    name: str
    value: float | int | None  # the number (ratio 0..1, or a count for integrity)
    value_text: str  # "99.982 %"
    target_text: str  # "at least 99.5 %"
    met: bool
    sentence: str  # the whole figure in words


def pct(x: float, digits: int = 3) -> str:
    """99.982 %, never rounding a miss up to 100 % (99.9996 → 99.999 %, not 100.000 %)."""
    if x >= 1.0:
        return "100 %"
    scale = 10 ** (digits + 2)
    return f"{int(x * scale) / 10**digits:.{digits}f} %"


def availability(requests: int, errors: int) -> SloFigure:
    value = 1.0 if requests == 0 else 1 - errors / requests
    met = value >= 0.995
    if requests == 0:
        sentence = "No ingest requests yet this month; none failed. Target: at least 99.5 %."
    else:
        sentence = (
            f"{pct(value)} of {requests:,} ingest requests were answered without a server error "
            f"this month: {'meeting' if met else 'below'} the 99.5 % target."
        )
    return SloFigure("availability", "Availability", value, pct(value), "at least 99.5 %", met, sentence)


def latency(windows: int, windows_ok: int) -> SloFigure:
    value = 1.0 if windows == 0 else windows_ok / windows
    met = windows_ok == windows
    if windows == 0:
        sentence = "No ingest traffic yet this month. Target: p95 under 500 ms in every 5-minute window."
    else:
        sentence = (
            f"95 % of requests were answered within 500 ms in {windows_ok:,} of {windows:,} "
            f"5-minute windows ({pct(value)}): {'meeting' if met else 'missing'} the target "
            f"of every window."
        )
    return SloFigure(
        "latency", "Latency (p95 under 500 ms)", value, pct(value), "every 5-minute window", met, sentence
    )


def freshness(minutes: int, fresh_minutes: int) -> SloFigure:
    value = 1.0 if minutes == 0 else fresh_minutes / minutes
    met = value >= 0.99
    if minutes == 0:
        sentence = "No events counted yet this month. Target: usage visible within 5 s, 99 % of the time."
    else:
        sentence = (
            f"Usage was visible within 5 seconds {pct(value)} of the time this month: "
            f"{'meeting' if met else 'below'} the 99 % target."
        )
    return SloFigure(
        "freshness", "Freshness (usage within 5 s)", value, pct(value), "99 % of the time", met, sentence
    )


def integrity(outbox_overdue: int, parked: int, dead_letters: int) -> SloFigure:
    at_risk = outbox_overdue + parked + dead_letters
    met = at_risk == 0
    if met:
        sentence = (
            "No acknowledged event is lost or at risk: nothing buffered past 24 hours, nothing "
            "set aside. Target: 100 % captured."
        )
    else:
        parts = [
            f"{n:,} {what}"
            for n, what in (
                (outbox_overdue, "buffered past 24 hours"),
                (parked, "set aside for an operator"),
                (dead_letters, "unreadable messages"),
            )
            if n
        ]
        sentence = f"{at_risk:,} events need attention ({', '.join(parts)}). Target: 100 % captured."
    return SloFigure(
        "integrity",
        "Data integrity (zero loss)",
        at_risk,
        "100 %" if met else f"{at_risk:,} at risk",
        "100 % (zero loss)",
        met,
        sentence,
    )


def accuracy(run_at: datetime | None, drift: int, ledger: int) -> SloFigure:
    if run_at is None:
        return SloFigure(
            "accuracy",
            "Billing accuracy",
            None,
            "not yet checked",
            "±0.0 %",
            True,
            "Invoices have not been reconciled yet this month. Target: ±0.0 % drift.",
        )
    ratio = 0.0 if ledger == 0 else drift / ledger
    met = drift == 0
    when = run_at.strftime("%Y-%m-%d %H:%M UTC")
    sentence = (
        f"Invoices match the ledger exactly (0.0 % drift, checked {when})."
        if met
        else f"Invoices differ from the ledger by {ratio:.4%} (checked {when}): the target is ±0.0 %; "
        "under investigation."
    )
    shown = "0.0 %" if met else f"{ratio * 100:.4f} %"
    return SloFigure("accuracy", "Billing accuracy", ratio, shown, "±0.0 %", met, sentence)
