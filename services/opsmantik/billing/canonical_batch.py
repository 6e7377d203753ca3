"""The canonical bytes of ledger rows (canonical.py's encoding), computed a column at a time.

`opsmantik archive` writes and checks every row of a month: encoding them one by one through
canonical.py costs tens of µs a row, hours for a billion-row year. Here Arrow's compute kernels
format each field for a whole row group and join the row texts column-wise; Python handles only
what Arrow cannot do exactly: strings that need JSON escapes (rare, row by row) and the properties
(each distinct text once, cached). canonical.py stays the definition: tests/unit/test_canonical_batch.py
holds the two equal on hostile rows, and a row whose bytes disagree with its recorded SHA-256 is
re-encoded by canonical.py before it is called changed (archive_files.checked_bodies).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from opsmantik.billing.canonical import ROW_KEYS, Entry, loads, properties_text

NEEDS_ESCAPE = r'[\x00-\x1f"\\]'  # what json.dumps(s, ensure_ascii=False) escapes
CACHE_LIMIT = 65536

Column: TypeAlias = Any  # a pyarrow Array or ChunkedArray (pyarrow ships no type hints)


def _json_strings(col: Column) -> Column:
    quoted = pc.binary_join_element_wise('"', col, '"', "")
    needs = pc.match_substring_regex(col, NEEDS_ESCAPE)
    if pc.any(needs).as_py():
        pairs = zip(col.to_pylist(), needs.to_pylist(), strict=True)
        fixed = [json.dumps(v, ensure_ascii=False) if m else None for v, m in pairs]
        quoted = pc.if_else(needs, pa.array(fixed, pa.string()), quoted)
    return pc.fill_null(quoted, "null")


def _quoted(text: Column) -> Column:
    return pc.binary_join_element_wise('"', text, '"', "")


def _timestamps(col: Column) -> Column:
    """'YYYY-MM-DDTHH:MM:SS.ffffffZ' (canonical.ts). Arrow's cast of a zone-less timestamp[us] (the
    UTC wall clock) to text gives it with a space for the T; strftime would be 25x slower."""
    text = pc.cast(pc.cast(col, pa.timestamp("us")), pa.string())
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return pc.binary_join_element_wise('"', text, 'Z"', "")


def _months(col: Column) -> Column:
    return _quoted(pc.utf8_slice_codeunits(pc.cast(col, pa.string()), 0, 7))  # 'YYYY-MM-DD' -> 'YYYY-MM'


def _ints(col: Column) -> Column:
    return pc.fill_null(pc.cast(col, pa.string()), "null")


class PropertiesText:
    """Canonical text of properties column values; each distinct text is encoded once."""

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self._cache: dict[str, str] = {}
        self._limit = limit

    def __call__(self, col: Column) -> pa.Array:
        cache, out = self._cache, []
        for v in col.to_pylist():
            if v is None:
                out.append("null")
                continue
            text = cache.get(v)
            if text is None:
                if len(cache) >= self._limit:
                    cache.clear()
                text = cache[v] = properties_text(loads(v))
            out.append(text)
        return pa.array(out, pa.string())


def row_bodies(table: pa.Table, properties: PropertiesText) -> list[bytes | None]:
    """Each row's canonical bytes (canonical.canonical(row_object(row))); None where a field is
    missing (a changed file): the caller re-encodes that row with canonical.py."""
    usage, billing = table["usage_month"], table["billing_month"]
    fields: dict[str, Any] = {
        "billing_class": _json_strings(table["billing_class"]),
        "billing_month": _months(billing),
        "event_id": _json_strings(table["event_id"]),
        "event_type": _json_strings(table["event_type"]),
        "kafka_offset": _ints(table["kafka_offset"]),
        "kafka_partition": _ints(table["kafka_partition"]),
        "kind": '"row"',
        "late": pc.if_else(pc.equal(usage, billing), "false", "true"),
        "ledgered_at": _timestamps(table["ledgered_at"]),
        "occurred_at": _timestamps(table["occurred_at"]),
        "path": _json_strings(table["path"]),
        "properties": properties(table["properties"]),
        "quantity": pc.cast(table["quantity"], pa.string()),
        "received_at": _timestamps(table["received_at"]),
        "site_id": _json_strings(table["site_id"]),
        "usage_month": _months(usage),
    }
    assert set(fields) == ROW_KEYS, "a ledger row field is not encoded here"
    parts: list[Any] = []
    for i, key in enumerate(sorted(fields)):  # canonical: keys by code point
        parts += [("{" if i == 0 else ",") + json.dumps(key) + ":", fields[key]]
    parts.append("}")
    text = pc.binary_join_element_wise(*parts, "")
    return pc.cast(text, pa.binary()).to_pylist()  # type: ignore[no-any-return]


def sha256_hex(bodies: list[bytes | None]) -> list[str | None]:
    return [None if b is None else hashlib.sha256(b).hexdigest() for b in bodies]


def row_entries(table: pa.Table, bodies: list[bytes]) -> list[Entry]:
    """The rows as entries (canonical.Entry): the totals' fields from the columns, and the bytes."""
    late = pc.not_equal(table["usage_month"], table["billing_month"]).to_pylist()
    columns = (table[c].to_pylist() for c in ("event_id", "quantity", "billing_class"))
    return [
        ({"kind": "row", "event_id": e, "quantity": q, "billing_class": c, "late": lt}, body)
        for e, q, c, lt, body in zip(*columns, late, bodies, strict=True)
    ]
