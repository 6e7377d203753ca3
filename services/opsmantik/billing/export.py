"""The dispute export's lines: entries in canonical order, then one summary (docs/billing.md).

NDJSON: one entry a line (the canonical object plus its own `sha256`), the last line
`{"kind": "summary", ...}`. CSV: a header (verify.CSV_COLUMNS), one record per entry, and a last
record of kind `summary` whose `summary` column holds the same summary object as JSON.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from opsmantik.billing.canonical import FORMAT, Digest, export_line, loads
from opsmantik.billing.entries import Q, entries
from opsmantik.billing.verify import CSV_COLUMNS, csv_record
from opsmantik.months import label

CHUNK = 500
INVOICE_FIELDS = ("events", "quantity", "overlimit_events", "overlimit_quantity")


def _csv(fields: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(fields)
    return buf.getvalue().encode("utf-8")


def summary(
    site_id: uuid.UUID,
    month: date,
    digest: Digest,
    invoice: Mapping[str, Any] | None,
    statement: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "kind": "summary",
        "format": FORMAT,
        "site_id": str(site_id),
        "month": label(month),
        "totals": digest.totals.as_dict(),
        "sha256": digest.hexdigest(),
        "invoice": {k: int(invoice[k]) if invoice else 0 for k in INVOICE_FIELDS},
        "statement": None
        if statement is None
        else {
            "sha256": statement["sha256"],
            "closed_at": statement["closed_at"].isoformat(),
            **{k: int(statement[k]) for k in INVOICE_FIELDS},
        },
        "generated_at": datetime.now(UTC).isoformat(),
    }


async def export_chunks(
    conn: asyncpg.Connection,
    site_id: uuid.UUID,
    month: date,
    fmt: str,
    invoice: Mapping[str, Any] | None,
    statement: Mapping[str, Any] | None,
) -> AsyncIterator[bytes]:
    """The export as byte chunks of at most CHUNK entries (inside a repeatable-read transaction)."""
    digest = Digest()
    chunk: list[bytes] = [_csv(list(CSV_COLUMNS))] if fmt == "csv" else []
    async for obj, canonical_body in entries(conn, site_id, month):
        body, line = export_line(obj, canonical_body)
        digest.add(obj, body)
        # CSV needs every field: the entry's own bytes parsed (ledger rows carry only the totals')
        chunk.append(_csv(csv_record(loads(body), line[-67:-3].decode())) if fmt == "csv" else line)
        if len(chunk) >= CHUNK:
            yield b"".join(chunk)
            chunk.clear()
    s = summary(site_id, month, digest, invoice, statement)
    if fmt == "csv":
        chunk.append(
            _csv(
                [
                    "summary",
                    *[""] * (len(CSV_COLUMNS) - 3),
                    s["sha256"],
                    json.dumps(s, sort_keys=True, separators=(",", ":")),
                ]
            )
        )
    else:
        chunk.append(json.dumps(s, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    yield b"".join(chunk)


async def invoice_and_statement(
    conn: asyncpg.Connection, site_id: uuid.UUID, month: date
) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
    return (
        await conn.fetchrow(Q["invoice_row"], site_id, month),
        await conn.fetchrow(Q["statement"], site_id, month),
    )
