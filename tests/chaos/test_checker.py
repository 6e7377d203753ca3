"""The checker's logic on hand-made records (pure: no stack needed)."""

from __future__ import annotations

from collections import Counter

from tests.chaos import checker
from tests.chaos.checker import AuditResult, LedgerState, ReconcileResult, Window, latencies_in, p95
from tests.chaos.loadgen import Attempt, LoadRecord

OK = ReconcileResult(True, "{}")


def evaluate(
    load: LoadRecord,
    ledger: LedgerState,
    reconcile: ReconcileResult,
    allowed: list[Window],
    topic: Counter[str] | None = None,
    audit: AuditResult | None = None,
) -> checker.Verdict:
    """The checker with a topic holding one copy of each ledger row and an audit that agrees,
    unless the test says otherwise."""
    topic = Counter(set(ledger.ids)) if topic is None else topic
    if audit is None:
        audit = AuditResult(True, True, sum(topic.values()), ledger.dead_letters, [], 0, "exit 0")
    return checker.evaluate(load, ledger, reconcile, allowed, topic, audit)


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
    attempts = [
        Attempt(10.0, "503", 0.01),
        Attempt(20.0, "503", 0.01),
        Attempt(21.0, "500", 0.2),
        Attempt(22.0, "200", 0.02),
    ]
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


def test_an_event_on_the_topic_but_not_in_the_ledger_fails_even_unacknowledged() -> None:
    # "b" never got its 200 (so acknowledged ⊆ ledger holds), but it is on the topic twice.
    rec = record(["a", "b"], {"a": "accepted"})
    topic = Counter({"a": 3, "b": 2})
    audit = AuditResult(True, False, 5, 0, ["b", "b"], 0, "exit 1")
    v = evaluate(rec, state(["a"]), OK, [], topic, audit)
    assert v.unledgered == ["b"] and (v.topic_copies, v.extra_copies) == (5, 3)
    assert not v.passed and v.audit_agrees
    assert "on the topic (5 copies in all) without a ledger row" in v.failures[0]


def test_copies_on_the_topic_each_ledgered_once_pass_and_a_ledger_row_without_a_message_fails() -> None:
    rec = record(["a", "b"], {"a": "accepted", "b": "fallback"})
    v = evaluate(
        rec,
        state(["a", "b"]),
        OK,
        [],
        Counter({"a": 2, "b": 3}),
        AuditResult(True, True, 5, 0, [], 0, "exit 0"),
    )
    assert v.passed, v.failures
    assert v.extra_copies == 3
    v = evaluate(rec, state(["a", "b"]), OK, [], Counter({"a": 1}), AuditResult(True, True, 1, 0, [], 0, ""))
    assert v.not_on_topic == ["b"] and not v.passed


def test_the_audit_must_agree_with_the_checker() -> None:
    rec = record(["a", "b"], {"a": "accepted", "b": "accepted"})
    topic = Counter({"a": 1, "b": 1})
    # The audit saw fewer messages than the topic holds (it stopped short).
    v = evaluate(rec, state(["a", "b"]), OK, [], topic, AuditResult(True, True, 1, 0, [], 0, "exit 0"))
    assert not v.passed and not v.audit_agrees
    assert "audit audited 1 messages of the site, the topic holds 2" in v.failures[-1]
    # The audit reports a loss the checker does not see.
    v = evaluate(rec, state(["a", "b"]), OK, [], topic, AuditResult(True, False, 2, 0, ["a"], 0, "exit 1"))
    assert not v.passed and any(
        "unaccounted ['a'] and 0 vanished != checker's unledgered []" in f for f in v.failures
    )
    # A ledger row deleted after the audit confirmed it: the audit counts it, cannot name it.
    gone = AuditResult(True, False, 2, 0, [], 0, "exit 1", vanished=1)
    v = evaluate(rec, state(["a"]), OK, [], topic, gone)
    assert v.audit_agrees and not v.passed
    # The audit passes a loss the checker sees.
    v = evaluate(rec, state(["a"]), OK, [], topic, AuditResult(True, True, 2, 0, [], 0, "exit 0"))
    assert not v.audit_agrees and any("audit passed" in f for f in v.failures)
    # The audit could not run.
    v = evaluate(rec, state(["a", "b"]), OK, [], topic, AuditResult(False, False, 0, 0, [], 0, "exit 3"))
    assert not v.passed and "did not run" in v.failures[-1]


def test_dead_letters_and_breaches_fail() -> None:
    rec = record(["a"], {"a": "accepted"})
    v = evaluate(
        rec,
        LedgerState(["a"], 0, 0, 0, dead_letters=1),
        OK,
        [],
        Counter({"a": 2}),
        AuditResult(True, False, 2, 1, [], 1, "exit 1"),
    )
    assert v.audit_agrees and not v.passed
    assert any("1 dead letters" in f for f in v.failures) and any("1 breach" in f for f in v.failures)


def test_a_200_that_does_not_list_every_event_in_order_fails() -> None:
    rec = record(["a", "b", "c"], {})
    rec.acknowledge(1.0, ["a", "b"], {"results": [{"event_id": "a", "status": "accepted"}]})
    rec.acknowledge(2.0, ["c"], {"results": [{"event_id": "c", "status": "accepted"}]})
    assert rec.acked == {"a": "accepted", "b": "missing", "c": "accepted"}
    assert [(b.sent, b.listed) for b in rec.bad_200] == [(["a", "b"], ["a"])]
    v = evaluate(rec, state(["a", "b", "c"]), OK, [])
    assert v.bad_200 == 1 and not v.passed
    assert any("did not list every sent event in order" in f for f in v.failures)
    swapped = record(["x", "y"], {})
    swapped.acknowledge(
        1.0,
        ["x", "y"],
        {"results": [{"event_id": "y", "status": "accepted"}, {"event_id": "x", "status": "accepted"}]},
    )
    garbage = record(["z"], {})
    garbage.acknowledge(1.0, ["z"], None)
    assert len(swapped.bad_200) == 1
    assert garbage.acked == {"z": "missing"} and garbage.bad_200[0].listed is None
