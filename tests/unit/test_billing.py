"""Pure parts of billing: the month parser, canonical encoding and offline verify, the close's
grace period, the export gate, the close lock key, the gateway's booked month."""

from __future__ import annotations

import io
import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from opsmantik.billing.canonical import Digest, _value, canonical, export_line, loads, properties_text
from opsmantik.billing.close import CloseRefused, check_closable
from opsmantik.billing.export import summary
from opsmantik.billing.verify import verify
from opsmantik.gateway.auth import SiteAuth
from opsmantik.gateway.exports import ExportGate
from opsmantik.gateway.quota import UsageCache
from opsmantik.months import month_end, parse_month

ROOT = Path(__file__).resolve().parents[2]
SITE = uuid.UUID("00000000-0000-4000-8000-000000000001")


@pytest.mark.parametrize(
    "raw",
    [
        "0000-01",
        "2026-13",
        "2026-00",
        "2026-1",
        "26-01",
        " 2026-01",
        "2026-01 ",
        "",
        None,
        "2026-01-01",
        "２０２６-01",
    ],
)
def test_bad_months_are_refused(raw: str | None) -> None:
    with pytest.raises(ValueError):
        parse_month(raw)


def test_good_months_at_the_edges() -> None:
    assert parse_month("0001-01") == date(1, 1, 1)
    assert parse_month("9999-12") == date(9999, 12, 1)
    assert parse_month("2026-12") == date(2026, 12, 1)
    assert month_end(date(2026, 12, 1)) == datetime(2027, 1, 1, tzinfo=UTC)


def test_close_is_refused_until_the_grace_period_has_passed() -> None:
    oct_ = date(2026, 10, 1)
    earliest = datetime(2026, 11, 4, tzinfo=UTC)  # month end + 3 days
    with pytest.raises(CloseRefused, match="grace period 3 days"):
        check_closable(oct_, earliest - timedelta(microseconds=1), 3.0)
    check_closable(oct_, earliest, 3.0)
    check_closable(oct_, datetime(2026, 11, 1, tzinfo=UTC), 0.0)
    with pytest.raises(CloseRefused):
        check_closable(oct_, datetime(2026, 10, 31, 23, 59, tzinfo=UTC), 0.0)


def test_the_close_lock_is_one_key_in_the_worker_and_the_close() -> None:
    worker = (ROOT / "services/opsmantik/worker/ledger.sql").read_text()
    billing = (ROOT / "services/opsmantik/billing/billing.sql").read_text()
    shared = re.findall(r"pg_advisory_xact_lock_shared\((\d+)\)", worker)
    exclusive = re.findall(r"pg_advisory_xact_lock\((\d+)\)", billing)
    assert len(shared) == 1 and shared == exclusive
    assert re.findall(r"pg_advisory_xact_lock_shared\((\d+)\)", billing) == shared  # voids
    assert 'Q["close_lock_shared"]' in (ROOT / "services/opsmantik/worker/ledger.py").read_text()


def _row(event_id: str, quantity: int = 1, **over: object) -> dict[str, object]:
    obj: dict[str, object] = {
        "kind": "row",
        "site_id": str(SITE),
        "event_id": event_id,
        "event_type": "api_call",
        "occurred_at": "2026-10-05T12:00:00.000000Z",
        "usage_month": "2026-10",
        "billing_month": "2026-10",
        "late": False,
        "quantity": quantity,
        "billing_class": "included",
        "path": "kafka",
        "received_at": "2026-10-05T12:00:00.100000Z",
        "ledgered_at": "2026-10-05T12:00:00.200000Z",
        "kafka_partition": 1,
        "kafka_offset": 7,
        "properties": {"b": [1, Decimal("2.50"), "é"], "a": None},
    }
    obj.update(over)
    return obj


def _void(event_id: str, quantity: int = 1) -> dict[str, object]:
    return {
        "kind": "void",
        "site_id": str(SITE),
        "event_id": event_id,
        "billed_month": "2026-10",
        "booked_month": "2026-10",
        "adjustment": False,
        "quantity": quantity,
        "billing_class": "included",
        "reason": "duplicate\nline",
        "voided_by": "ops",
        "voided_at": "2026-10-06T00:00:00.000000Z",
    }


def _export(entries: list[dict[str, object]], statement_sha: str | None = None) -> tuple[bytes, str]:
    d = Digest()
    out = []
    for obj in entries:
        body, line = export_line(obj)
        d.add(obj, body)
        out.append(line)
    t = d.totals
    invoice = {
        "events": t.events,
        "quantity": t.quantity,
        "overlimit_events": t.overlimit_events,
        "overlimit_quantity": t.overlimit_quantity,
    }
    stmt = (
        None
        if statement_sha is None
        else {"sha256": statement_sha, "closed_at": datetime.now(UTC), **invoice}
    )
    s = summary(SITE, date(2026, 10, 1), d, invoice, stmt)
    return b"".join(out) + json.dumps(s).encode() + b"\n", d.hexdigest()


def test_canonical_bytes_are_sorted_compact_utf8() -> None:
    assert canonical({"b": 1, "a": {"d": "é", "c": None}}) == '{"a":{"c":null,"d":"é"},"b":1}'.encode()


def test_canonical_numbers_keep_their_digits_and_the_splice_equals_the_plain_encoding() -> None:
    props = loads('{"z": 123456789012345678901234567890, "x": 2.50, "y": 1E-7, "w": [0.1, -0]}')
    assert properties_text(props) == '{"w":[0.1,0],"x":2.50,"y":0.0000001,"z":123456789012345678901234567890}'
    row = _row("a1", properties=props)
    assert canonical(row) == _value(row).encode()  # the fast path (placeholder splice) is exact
    with pytest.raises(ValueError):
        loads('{"x": NaN}')


def test_verify_matches_then_names_the_changed_row() -> None:
    entries = [_row("a1", 3), _row("b2", 5), _void("a1", 3)]
    data, sha = _export(entries)
    data, sha2 = _export(entries, statement_sha=sha)
    assert sha == sha2
    res = verify(io.StringIO(data.decode()))
    assert res.ok, res.problems
    assert res.sha256 == sha and res.entries == 3
    changed = data.replace(b'"quantity":5', b'"quantity":6', 1)
    res = verify(io.StringIO(changed.decode()))
    assert not res.ok
    assert res.problems[0].startswith("line 2 (event_id 'b2'): content does not match")


def test_verify_catches_order_truncation_and_statement_mismatch() -> None:
    data, sha = _export([_row("b2"), _row("a1")])
    assert any("out of canonical order" in p for p in verify(io.StringIO(data.decode())).problems)
    data, sha = _export([_row("a1"), _row("b2")])
    truncated = b"\n".join(data.splitlines()[:-1]) + b"\n"
    assert any("no summary line" in p for p in verify(io.StringIO(truncated.decode())).problems)
    data, _ = _export([_row("a1")], statement_sha="0" * 64)
    assert any(p.startswith("statement:") for p in verify(io.StringIO(data.decode())).problems)
    dropped = b"\n".join(_export([_row("a1"), _row("b2")])[0].splitlines()[1:]) + b"\n"
    assert any(p.startswith("summary:") for p in verify(io.StringIO(dropped.decode())).problems)


def test_export_gate_limits_per_site_and_in_total_at_their_edges() -> None:
    gate = ExportGate(max_per_site=2, max_total=3)
    a, b = uuid.uuid4(), uuid.uuid4()
    assert gate.try_acquire(a) and gate.try_acquire(a)
    assert not gate.try_acquire(a)  # third for the site
    assert gate.try_acquire(b)
    assert not gate.try_acquire(b)  # fourth in total
    gate.release(a)
    assert gate.try_acquire(b) and not gate.try_acquire(a)
    gate.release(a)
    gate.release(b)
    gate.release(b)
    assert gate.running == {}


def _event(month: date) -> object:
    class E:
        usage_month = month

    return E()


def test_hard_cap_and_quota_use_the_month_the_worker_books_into() -> None:
    oct_, nov = date(2026, 10, 1), date(2026, 11, 1)
    site = SiteAuth(SITE, uuid.uuid4(), monthly_quota=None, hard_cap=5, rate_per_s=10, burst=10)
    cache = UsageCache(stale_s=60)
    cache.load([(SITE, oct_, 0), (SITE, nov, 5)])
    assert cache.check(site, [_event(oct_)]).exceeded_month is None  # October open: its own usage
    cache.load([(SITE, oct_, 0), (SITE, nov, 5)], frozenset({oct_}))
    assert cache.check(site, [_event(oct_)]).exceeded_month == nov  # late: booked into November
    soft = SiteAuth(SITE, uuid.uuid4(), monthly_quota=6, hard_cap=None, rate_per_s=10, burst=10)
    assert cache.check(soft, [_event(oct_), _event(oct_)]).statuses == ["accepted", "overlimit"]


def test_verify_names_a_row_whose_byte_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from argparse import Namespace

    from opsmantik.cli.billing import cmd_verify as main

    data, _ = _export([_row("a1"), _row("b2")])
    bad = bytearray(data)
    bad[data.index(b"api_call", data.index(b'"b2"') - 200)] = 0xFF  # in row b2's event_type
    path = tmp_path / "bad.ndjson"
    path.write_bytes(bytes(bad))
    assert main(None, Namespace(file=str(path), json=False)) == 1
    assert "line 2 (event_id 'b2'): cannot be encoded" in capsys.readouterr().out


def _csv_export(entries: list[dict[str, object]]) -> str:
    import csv

    from opsmantik.billing.verify import CSV_COLUMNS, csv_record

    d = Digest()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for obj in entries:
        body, line = export_line(obj)
        d.add(obj, body)
        w.writerow(csv_record(obj, line[-67:-3].decode()))
    t = d.totals
    invoice = {
        "events": t.events,
        "quantity": t.quantity,
        "overlimit_events": t.overlimit_events,
        "overlimit_quantity": t.overlimit_quantity,
    }
    s = summary(SITE, date(2026, 10, 1), d, invoice, None)
    w.writerow(["summary", *[""] * (len(CSV_COLUMNS) - 3), s["sha256"], json.dumps(s)])
    return buf.getvalue()


def test_csv_form_verifies_and_a_filled_cell_of_the_other_kind_is_a_change() -> None:
    text = _csv_export([_row("a1", 3), _row("b2"), _void("a1", 3)])
    res = verify(io.StringIO(text, newline=""))
    assert res.ok, res.problems
    lines = text.split("\r\n")
    lines[2] = lines[2].replace(",,,,,,,", ",,,,,oops,,", 1)  # row b2: a void-only column filled
    res = verify(io.StringIO("\r\n".join(lines), newline=""))
    assert not res.ok and "must be empty for a row" in res.problems[0], res.problems


def test_loss_seam_reads_site_ids_anywhere_in_the_audits_json() -> None:
    from opsmantik.sla.loss import ALL_SITES, LossReport, _site_ids

    audit = {"ok": False, "sites": [{"site_id": str(SITE), "unaccounted": 2}], "x": [{"site_id": "b"}]}
    assert _site_ids(audit) == {str(SITE), "b"}
    report = LossReport(lost={str(SITE): 2, ALL_SITES: 1})
    assert report.for_site(SITE) == 3 and report.for_site(uuid.uuid4()) == 1
