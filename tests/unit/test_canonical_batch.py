"""The column-wise canonical encoding (services/opsmantik/billing/canonical_batch.py) equals
canonical.py's, row by row, on hostile rows; the archive's row check falls back to canonical.py
and names a changed row; archived rows merge in the SQL's COLLATE "C" order."""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opsmantik.billing import archive_files, canonical_batch
from opsmantik.billing.archive_files import COLUMNS, SCHEMA, ArchiveTampered, checked_bodies
from opsmantik.billing.canonical import canonical, row_object
from opsmantik.billing.canonical_batch import PropertiesText, row_bodies

ROW_SCHEMA = pa.schema([SCHEMA.field(c) for c in COLUMNS])
STRINGS = [
    "plain",
    'quote " and backslash \\',
    "controls \x00\x01\x08\t\n\x0b\x0c\r\x1f end",
    "non-ASCII é ü € 𝄞 \u2028 \u2029 \x7f",
    "",
    "\uffff",
    "\U00010000",
]
PROPERTIES = [
    None,
    "{}",
    '{"b": 1, "a": 2, "é": 3, "aa": 4, "\\u00e9": 5}',
    '{"price": 2.50, "tiny": 1E-7, "big": 12345678901234567890123, "neg": -0.0, "e": 1e+3}',
    '{"nested": {"z": [1, {"y": null, "x": true}], "a": "\\"\\\\\\n\\u0001"}}',
    '["not", "an", "object"]',
]


def hostile_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    instants = [
        datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 12, 1, 0, 0, 0, 0, tzinfo=UTC),
        datetime(5, 1, 2, 3, 4, 5, 120, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 0, 0, 999999, tzinfo=UTC),
    ]
    rows = []
    for i in range(n):
        t = rng.choice(instants) + timedelta(microseconds=rng.randrange(10**9)) if i % 5 else instants[i % 4]
        usage = date(t.year, t.month, 1)
        rows.append(
            {
                "site_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "event_id": rng.choice(STRINGS) + str(i),
                "event_type": rng.choice(STRINGS),
                "occurred_at": t,
                "usage_month": usage,
                "billing_month": usage if i % 3 else date(2027, 1, 1),
                "quantity": rng.choice([1, 7, 1_000_000_000_000]),
                "billing_class": rng.choice(["included", "overlimit", 'odd "class"']),
                "path": rng.choice(["kafka", "fallback"]),
                "received_at": t + timedelta(milliseconds=3),
                "ledgered_at": t + timedelta(seconds=1),
                "kafka_partition": None if i % 4 == 0 else i % 12,
                "kafka_offset": None if i % 4 == 0 else rng.randrange(2**62),
                "properties": PROPERTIES[i % len(PROPERTIES)],
            }
        )
    return rows


def test_column_wise_bytes_equal_canonical_py_row_by_row() -> None:
    rows = hostile_rows(3000)
    got = row_bodies(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), PropertiesText(limit=2))
    want = [canonical(row_object(r)) for r in rows]
    mismatched = [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
    assert not mismatched, (mismatched[:3], got[mismatched[0]], want[mismatched[0]])


def test_a_changed_field_changes_the_bytes() -> None:
    rows = hostile_rows(50)
    base = row_bodies(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), PropertiesText())
    for key, value in [
        ("quantity", 2),
        ("path", "kafka "),
        ("properties", '{"x": 2.5}'),
        ("kafka_offset", 1),
    ]:
        changed = [dict(r) for r in rows]
        changed[9][key] = value
        after = row_bodies(pa.Table.from_pylist(changed, schema=ROW_SCHEMA), PropertiesText())
        assert after[9] != base[9] and after[:9] == base[:9] and after[10:] == base[10:], key


def sealed(rows: list[dict[str, Any]]) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    return archive_files.with_row_sha(table, PropertiesText())


def test_checked_bodies_names_a_changed_row_by_position() -> None:
    table = sealed(hostile_rows(40))
    q = table["quantity"].to_pylist()
    q[23] += 1
    changed = table.set_column(table.schema.get_field_index("quantity"), "quantity", pa.array(q, pa.int64()))
    event_id = table["event_id"][23].as_py()
    with pytest.raises(
        ArchiveTampered, match=r"row 1023 \(site [0-9a-f-]+, event_id " + re.escape(repr(event_id))
    ):
        checked_bodies("f.parquet", changed, range(1000, 1040), PropertiesText())


def test_checked_bodies_trusts_canonical_py_where_the_columns_disagree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = hostile_rows(10)
    table = sealed(rows)
    real = canonical_batch.row_bodies

    def off_by_one(t: pa.Table, p: PropertiesText) -> list[bytes | None]:
        out = real(t, p)
        out[4] = b"{}"  # a column-wise encoding bug on one row
        return out

    monkeypatch.setattr(archive_files, "row_bodies", off_by_one)
    got = checked_bodies("f.parquet", table, range(10), PropertiesText())
    assert got == [canonical(row_object(r)) for r in rows]  # the row is re-encoded, not refused


def test_archived_entries_merge_in_bytewise_order(tmp_path: Path) -> None:
    site, month = uuid.uuid4(), date(2026, 9, 1)
    ids = ["b", "a", "\uffff", "\U00010000", "Z", "é", "a0", "~"]
    urls = []
    for k in range(2):
        rows = hostile_rows(len(ids), seed=k)
        for i, r in enumerate(rows):
            r.update(site_id=str(site), event_id=ids[i] + str(k), usage_month=month, billing_month=month)
        rows.sort(key=lambda r: r["event_id"].encode())
        url = str(tmp_path / f"{k}.parquet")
        pq.write_table(sealed(rows), url)
        urls.append((url, hashlib.sha256(Path(url).read_bytes()).hexdigest()))
    merged = [row["event_id"] for row, _ in archive_files.archived_entries(urls, site, month)]
    assert merged == sorted(merged, key=str.encode) and len(merged) == 2 * len(ids)
