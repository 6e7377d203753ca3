"""The benchmark's table and percentile math (tests/bench/stats.py, tests/bench/profile.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.env import Statement, statement_label
from tests.bench.profile import summarise
from tests.bench.runner import statements_note
from tests.bench.stats import Row, markdown_table, percentile, ratio, text_table


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order must not matter
    values.reverse()
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7.0


def test_percentile_empty_and_out_of_range() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_ratio_handles_missing_baseline() -> None:
    assert ratio(30.0, 60.0) == 0.5
    assert ratio(30.0, None) is None
    assert ratio(30.0, 0.0) is None
    assert ratio(None, 60.0) is None


def test_tables_show_every_row_with_ratio_and_goal() -> None:
    base = Row("bare handler", "baseline", events_per_s=30_000, requests_per_s=30_000, p95_ms=1.5)
    gw = Row(
        "1 event/request",
        "scenario",
        events_per_s=21_000,
        requests_per_s=21_000,
        p95_ms=4.0,
        baseline="bare handler",
        ratio=0.7,
        goal="≥ 0.60× bare req/s",
        goal_met=True,
    )
    text = text_table([base, gw]).splitlines()
    assert len(text) == 4  # header, rule, two rows
    assert "30,000" in text[2] and "-" in text[2]
    assert "0.70× bare handler" in text[3] and "(met)" in text[3]
    md = markdown_table([base, gw]).splitlines()
    assert md[0].startswith("| name |") and len(md) == 4
    assert md[3].count("|") == md[0].count("|")


def test_profile_summary_self_and_inclusive(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text(
        "main (app.py:1);handle (gw.py:10);loads (json.py:5) 6\n"
        "main (app.py:1);handle (gw.py:12);send (kafka.py:7) 3\n"
        "main (app.py:1);poll (kafka.py:20) 1\n"
    )
    p = summarise("gw", raw)
    assert p is not None and p.samples == 10
    assert p.top_self[0] == ("loads (json.py)", 0.6)
    # `main` holds every sample, so it is left out; `handle` merges its two lines.
    assert ("handle (gw.py)", 0.9) in p.top_inclusive
    assert all(f != "main (app.py)" for f, _ in p.top_inclusive)


def test_statement_label_drops_comments_and_cuts() -> None:
    query = (
        "-- The batch's new rows\n-- more words\n"
        "INSERT INTO ingest_idempotency AS i (site_id,\n    event_id) -- why\nSELECT 1"
    )
    assert statement_label(query) == "INSERT INTO ingest_idempotency AS i (site_id, event_id) SELECT 1"
    cut = statement_label(query, width=20)
    assert cut == "INSERT INTO ingest_…" and len(cut) == 20


def test_statements_note_per_event() -> None:
    top = [
        Statement("INSERT x", calls=10, rows=2000, ms=50.0, share=0.625),
        Statement("SELECT y", 10, 0, 30.0, 0.375),
    ]
    note = statements_note(top, events=2000)
    assert note == (
        "Postgres execution time (wall, pg_stat_statements): `INSERT x` 62% (10 calls, 25.0 µs/ev); "
        "`SELECT y` 38% (10 calls, 15.0 µs/ev)"
    )
