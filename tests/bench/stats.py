"""Pure math and formatting for the benchmark: percentiles, one result row, the table.

Kept free of I/O so tests/unit/test_bench_stats.py can check it without the stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


@dataclass
class Row:
    """One line of the table. Rates are per second, latencies and lags in milliseconds,
    CPU in microseconds of CPU time per event (user + system)."""

    name: str
    kind: str  # "baseline" or "scenario"
    events_per_s: float | None = None
    requests_per_s: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    cpu_us_per_event: float | None = None  # our processes (server, worker, relay)
    engine_cpu_us_per_event: float | None = None  # Kafka + Postgres
    fresh_p50_ms: float | None = None
    fresh_p99_ms: float | None = None
    baseline: str | None = None  # name of the row this one is compared with
    ratio: float | None = None
    goal: str = ""
    goal_met: bool | None = None
    notes: list[str] = field(default_factory=list)


COLUMNS: list[tuple[str, str, str]] = [
    # (header, attribute, format)
    ("name", "name", "s"),
    ("events/s", "events_per_s", ",.0f"),
    ("req/s", "requests_per_s", ",.0f"),
    ("p50 ms", "p50_ms", ".1f"),
    ("p95 ms", "p95_ms", ".1f"),
    ("p99 ms", "p99_ms", ".1f"),
    ("CPU µs/ev", "cpu_us_per_event", ".1f"),
    ("engines µs/ev", "engine_cpu_us_per_event", ".1f"),
    ("fresh p50 ms", "fresh_p50_ms", ".0f"),
    ("fresh p99 ms", "fresh_p99_ms", ".0f"),
    ("vs baseline", "ratio", ".2f"),
    ("goal", "goal", "s"),
]


def cell(value: object, fmt: str) -> str:
    if value is None or value == "":
        return "-"
    if fmt == "s":
        return str(value)
    return format(value, fmt)


def _goal_cell(row: Row) -> str:
    if not row.goal:
        return "-"
    mark = {True: "met", False: "NOT met", None: "?"}[row.goal_met]
    return f"{row.goal} ({mark})"


def _cells(row: Row) -> list[str]:
    out = []
    for _, attr, fmt in COLUMNS:
        if attr == "goal":
            out.append(_goal_cell(row))
        elif attr == "ratio" and row.ratio is not None:
            out.append(f"{row.ratio:.2f}× {row.baseline}")
        else:
            out.append(cell(getattr(row, attr), fmt))
    return out


def text_table(rows: Sequence[Row]) -> str:
    """Fixed-width table for the terminal."""
    headers = [h for h, _, _ in COLUMNS]
    body = [_cells(r) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 or i >= 10 else c.rjust(w)
                for i, (c, w) in enumerate(zip(b, widths, strict=True))
            )
        )
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    headers = [h for h, _, _ in COLUMNS]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 or i >= 10 else "---:" for i in range(len(headers))) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cells(r)) + " |")
    return "\n".join(lines)
