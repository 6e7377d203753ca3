"""The canonical encoding of a site's ledger entries for a month, and their SHA-256.

The statement `opsmantik billing close` records, the summary line of the dispute export and
`opsmantik billing verify` all compute the digest here, so they agree by construction:

- an entry is a JSON object: a ledger row (`"kind": "row"`, ROW_KEYS) or a void entry
  (`"kind": "void"`, VOID_KEYS); timestamps are UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ`, months
  `YYYY-MM`, properties the event's own JSON object (or null);
- its canonical bytes: UTF-8 JSON, keys sorted by code point at every level, no whitespace,
  strings escaped as Python's `json.dumps(s, ensure_ascii=False)` does (non-ASCII as itself), and
  numbers exactly as written: integers in decimal, other numbers as plain decimals with their
  digits kept (`2.50` stays `2.50`, `1E-7` is `0.0000001`), never through a binary float;
- order: the rows by event_id (bytewise ascending), then the void entries by event_id;
- digest: SHA-256 over every entry's canonical bytes each followed by one `\\n`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from json.encoder import encode_basestring as _encode_str  # json.dumps(s, ensure_ascii=False)
from typing import Any

ROW_FIELDS = (  # in the dispute export's CSV column order (verify.CSV_COLUMNS)
    "kind",
    "site_id",
    "event_id",
    "event_type",
    "occurred_at",
    "usage_month",
    "billing_month",
    "late",
    "quantity",
    "billing_class",
    "path",
    "received_at",
    "ledgered_at",
    "kafka_partition",
    "kafka_offset",
    "properties",
)
ROW_KEYS = frozenset(ROW_FIELDS)
VOID_KEYS = frozenset(
    {
        "kind",
        "site_id",
        "event_id",
        "billed_month",
        "booked_month",
        "adjustment",
        "quantity",
        "billing_class",
        "reason",
        "voided_by",
        "voided_at",
    }
)
KEYS = {"row": ROW_KEYS, "void": VOID_KEYS}
FORMAT = "opsmantik.dispute-export.v1"


def ts(value: datetime) -> str:
    u = value.astimezone(UTC)  # not strftime: its %Y does not pad years before 1000
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}Z"
    )


def month_text(value: date) -> str:
    return f"{value.year:04d}-{value.month:02d}"


def row_object(r: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger row (billing.sql `site_rows`) as its canonical object."""
    props = r["properties"]
    return {
        "kind": "row",
        "site_id": str(r["site_id"]),
        "event_id": r["event_id"],
        "event_type": r["event_type"],
        "occurred_at": ts(r["occurred_at"]),
        "usage_month": month_text(r["usage_month"]),
        "billing_month": month_text(r["billing_month"]),
        "late": r["usage_month"] != r["billing_month"],
        "quantity": int(r["quantity"]),
        "billing_class": r["billing_class"],
        "path": r["path"],
        "received_at": ts(r["received_at"]),
        "ledgered_at": ts(r["ledgered_at"]),
        "kafka_partition": r["kafka_partition"],
        "kafka_offset": r["kafka_offset"],
        "properties": None if props is None else loads(props),
    }


def void_object(r: Mapping[str, Any]) -> dict[str, Any]:
    """A void entry (billing.sql `site_voids`) as its canonical object."""
    return {
        "kind": "void",
        "site_id": str(r["site_id"]),
        "event_id": r["event_id"],
        "billed_month": month_text(r["billed_month"]),
        "booked_month": month_text(r["booked_month"]),
        "adjustment": r["billed_month"] != r["booked_month"],
        "quantity": int(r["quantity"]),
        "billing_class": r["billing_class"],
        "reason": r["reason"],
        "voided_by": r["voided_by"],
        "voided_at": ts(r["voided_at"]),
    }


def _reject(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject)


def loads(text: str | bytes) -> Any:
    """JSON with every non-integer number kept exact (Decimal): what canonical() expects."""
    if isinstance(text, str) and not text.startswith("\ufeff"):
        return _DECODER.decode(text)  # what json.loads does for a str, without a decoder per call
    return json.loads(text, parse_float=Decimal, parse_constant=_reject)


def _value(v: Any) -> str:
    # Exact str and int first, through what json.dumps(v, ensure_ascii=False) runs for them (the C
    # string escaper, int's repr) without building an encoder per call: most of verify's time.
    t = type(v)
    if t is str:
        return _encode_str(v)
    if t is int:
        return int.__repr__(v)
    if isinstance(v, dict):
        return "{" + ",".join(_value(k) + ":" + _value(v[k]) for k in sorted(v)) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise ValueError(f"{v} is not JSON")
        return format(v, "f")
    if isinstance(v, float):
        raise TypeError("a float would lose digits: parse with canonical.loads")
    return json.dumps(v, ensure_ascii=False)  # bool, None, subclasses of str and int


def properties_text(value: Any) -> str:
    """Canonical JSON text of a properties value (the CSV form's column)."""
    return _value(value)


_PLACEHOLDER = "\x00properties\x00"  # no ledger text can hold NUL (Postgres refuses it)
_QUOTED = json.dumps(_PLACEHOLDER)


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The canonical bytes of an entry. Its flat fields go through the C encoder; only the
    properties (any JSON) through _value, spliced in where the encoder put a placeholder."""
    if "properties" not in obj:
        return _value(dict(obj)).encode("utf-8")
    flat = json.dumps(
        {**obj, "properties": _PLACEHOLDER}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return flat.replace(_QUOTED, _value(obj["properties"]), 1).encode("utf-8")


def export_line(obj: Mapping[str, Any], body: bytes | None = None) -> tuple[bytes, bytes]:
    """(canonical bytes, the NDJSON export line: the object plus the entry's own sha256)."""
    body = canonical(obj) if body is None else body
    return body, body[:-1] + b',"sha256":"' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'


Entry = tuple[dict[str, Any], bytes]
"""(fields, canonical bytes) of an entry. The bytes are the entry; the fields are what the totals
and the merge read: kind, event_id, quantity, billing_class and late (rows) or adjustment (voids),
and may be only those (ledger rows are encoded a batch at a time, canonical_batch.row_entries).
Whoever needs every field parses the bytes: loads(body) is the canonical object."""


@dataclass
class Totals:
    """Running totals over a month's entries, net of its void entries (= the invoice)."""

    rows: int = 0
    row_quantity: int = 0
    late_rows: int = 0
    voids: int = 0
    voided_quantity: int = 0
    adjustments: int = 0
    events: int = 0
    quantity: int = 0
    overlimit_events: int = 0
    overlimit_quantity: int = 0

    def add(self, obj: Mapping[str, Any]) -> None:
        q, over = int(obj["quantity"]), obj["billing_class"] == "overlimit"
        sign = 1 if obj["kind"] == "row" else -1
        if obj["kind"] == "row":
            self.rows += 1
            self.row_quantity += q
            self.late_rows += bool(obj["late"])
        else:
            self.voids += 1
            self.voided_quantity += q
            self.adjustments += bool(obj["adjustment"])
        self.events += sign
        self.quantity += sign * q
        self.overlimit_events += sign * over
        self.overlimit_quantity += sign * q * over

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Digest:
    """SHA-256 over canonical entries in canonical order (rows, then voids, each by event_id)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.totals = Totals()

    def add(self, obj: Mapping[str, Any], body: bytes | None = None) -> None:
        self._h.update((body if body is not None else canonical(obj)) + b"\n")
        self.totals.add(obj)

    def hexdigest(self) -> str:
        return self._h.hexdigest()
