"""The per-scenario table (plain text / Markdown) and its JSON form."""

from __future__ import annotations

from typing import Any

from tests.chaos.scenarios import RunResult

COLUMNS = [
    "scn",
    "seed",
    "sent",
    "acked",
    "outcomes",
    "retries",
    "lost",
    "topic copies",
    "audit",
    "drift",
    "5xx",
    "drain s",
    "p95 fault ms",
    "crashes",
    "result",
]
SHORT = {"accepted": "acc", "overlimit": "over", "degraded": "deg", "fallback": "fb"}


def _outcomes(r: RunResult) -> str:
    if r.verdict is None:
        return "-"
    return " ".join(f"{SHORT.get(k, k)}={v}" for k, v in sorted(r.verdict.outcomes.items()))


def _retries(r: RunResult) -> str:
    if r.verdict is None:
        return "-"
    kinds = {k: v for k, v in r.verdict.attempts.items() if k != "200"}
    return " ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "0"


def row(r: RunResult) -> list[str]:
    v = r.verdict
    na = "-"
    return [
        str(r.scenario),
        str(r.seed),
        str(v.sent) if v else na,
        str(v.acked) if v else na,
        _outcomes(r),
        _retries(r),
        str(len(v.lost)) if v else na,
        f"{v.topic_copies} (+{v.extra_copies} dup)" if v else na,
        (
            f"{'agrees' if v.audit_agrees else 'DISAGREES'}, {v.audit_unaccounted} unacc."
            + (f" {v.audit_vanished} vanished" if v.audit_vanished else "")
        )
        if v
        else na,
        str(v.drift) if v else na,
        f"{v.fivexx_total} ({v.fivexx_outside} outside)" if v else na,
        f"{r.drain_s:.1f}" if r.drain_s is not None else na,
        f"{r.p95_fault_ms:.0f}" if r.p95_fault_ms is not None else na,
        " ".join(f"{k}={n}" for k, n in r.crashes.items()) or "0",
        "PASS" if r.passed else "FAIL",
    ]


def markdown(results: list[RunResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    return "\n".join(lines)


def failures(results: list[RunResult]) -> str:
    out = []
    for r in results:
        for f in r.failures:
            out.append(f"scenario {r.scenario} seed {r.seed}: {f}")
        for n in r.notes:
            out.append(f"scenario {r.scenario} seed {r.seed} note: {n}")
    return "\n".join(out)


def as_json(r: RunResult) -> dict[str, Any]:
    v = r.verdict
    return {
        "scenario": r.scenario,
        "title": r.title,
        "seed": r.seed,
        "passed": r.passed,
        "sent": v.sent if v else None,
        "acked": v.acked if v else None,
        "ledger": v.ledger if v else None,
        "outcomes": v.outcomes if v else None,
        "attempts": v.attempts if v else None,
        "lost": len(v.lost) if v else None,
        "duplicated": len(v.duplicated) if v else None,
        "invented": len(v.invented) if v else None,
        "drift": v.drift if v else None,
        "topic_copies": v.topic_copies if v else None,
        "extra_copies": v.extra_copies if v else None,
        "unledgered": len(v.unledgered) if v else None,
        "bad_200": v.bad_200 if v else None,
        "audit_unaccounted": v.audit_unaccounted if v else None,
        "audit_vanished": v.audit_vanished if v else None,
        "audit_agrees": v.audit_agrees if v else None,
        "outbox_depth": v.outbox_depth if v else None,
        "fivexx": v.fivexx_total if v else None,
        "fivexx_outside": v.fivexx_outside if v else None,
        "drain_s": r.drain_s,
        "p95_fault_ms": r.p95_fault_ms,
        "crashes": r.crashes,
        "notes": r.notes,
        "failures": r.failures,
    }
