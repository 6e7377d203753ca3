"""The checker's logic on hand-made records (pure: no stack needed)."""

from __future__ import annotations

from tests.chaos.checker import LedgerState, ReconcileResult, Window, evaluate, latencies_in, p95
from tests.chaos.loadgen import Attempt, LoadRecord

OK = ReconcileResult(True, "{}")


def record(sent: list[str], acked: dict[str, str], attempts: list[Attempt] | None = None) -> LoadRecord:
    return LoadRecord(sent=set(sent), acked=acked, attempts=attempts or [])


def state(ids: list[str], outbox: int = 0, drift: int = 0) -> LedgerState:
    return LedgerState(ids, outbox, drift, 0)


def test_clean_run_passes() -> None:
    rec = record(["a", "b", "c"], {"a": "accepted", "b": "fallback"})
    # "c" was sent, never acknowledged, but landed: allowed (ledger ⊆ sent).
    v = evaluate(rec, state(["a", "b", "c"]), OK, [])
    assert v.passed, v.failures
    assert (v.sent, v.acked, v.ledger) == (3, 2, 3)
    assert v.outcomes == {"accepted": 1, "fallback": 1}


def test_acknowledged_but_missing_is_lost() -> None:
    v = evaluate(record(["a", "b"], {"a": "accepted", "b": "accepted"}), state(["a"]), OK, [])
    assert v.lost == ["b"]
    assert not v.passed
    assert "missing from the ledger" in v.failures[0]


def test_ledger_row_never_sent_is_invented() -> None:
    v = evaluate(record(["a"], {"a": "accepted"}), state(["a", "zzz"]), OK, [])
    assert v.invented == ["zzz"]
    assert not v.passed


def test_duplicate_ledger_rows_are_reported() -> None:
    v = evaluate(record(["a"], {"a": "accepted"}), state(["a", "a"]), OK, [])
    assert v.duplicated == ["a"]
    assert not v.passed


def test_drift_outbox_and_reconcile_fail() -> None:
    rec = record(["a"], {"a": "accepted"})
    assert not evaluate(rec, state(["a"], drift=1), OK, []).passed
    assert not evaluate(rec, state(["a"], outbox=2), OK, []).passed
    v = evaluate(rec, state(["a"]), ReconcileResult(False, "exit 1"), [])
    assert v.failures == ["opsmantik reconcile failed: exit 1"]


def test_5xx_allowed_only_inside_both_down_window() -> None:
    attempts = [Attempt(10.0, "503", 0.01), Attempt(20.0, "503", 0.01), Attempt(21.0, "500", 0.2),
                Attempt(22.0, "200", 0.02)]
    rec = record(["a"], {"a": "accepted"}, attempts)
    inside = evaluate(rec, state(["a"]), OK, [Window(9.0, 30.0)])
    assert inside.passed and inside.fivexx_total == 3 and inside.fivexx_outside == 0
    partly = evaluate(rec, state(["a"]), OK, [Window(15.0, 30.0)])
    assert partly.fivexx_outside == 1 and not partly.passed


def test_non_retryable_4xx_fails_but_429_does_not() -> None:
    rec = record(["a"], {"a": "accepted"}, [Attempt(1.0, "429", 0.01), Attempt(2.0, "200", 0.01)])
    assert evaluate(rec, state(["a"]), OK, []).passed
    rec.attempts.append(Attempt(3.0, "401", 0.01))
    v = evaluate(rec, state(["a"]), OK, [])
    assert v.unexpected_4xx == 1 and not v.passed


def test_unknown_outcome_fails() -> None:
    v = evaluate(record(["a"], {"a": "maybe"}), state(["a"]), OK, [])
    assert not v.passed


def test_p95_nearest_rank_and_window() -> None:
    assert p95([]) is None
    assert p95([0.5]) == 0.5
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    attempts = [Attempt(1.0, "200", 0.1), Attempt(5.0, "200", 0.9), Attempt(5.5, "503", 2.0)]
    assert latencies_in(attempts, Window(4.0, 6.0)) == [0.9]
