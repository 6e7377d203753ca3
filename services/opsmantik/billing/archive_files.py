"""Reading the ledger's Parquet archives (`opsmantik archive`, services/opsmantik/billing/archive.py).

Every row read is checked against its row_sha256 (the SHA-256 of its canonical bytes,
services/opsmantik/billing/canonical.py): a changed row raises ArchiveTampered naming its position,
site and event_id; a file whose bytes differ from the SHA-256 recorded in ledger_archives is refused
before it is used. The dispute export and `billing close` read archived months through
opsmantik.billing.entries, which calls `archived_rows`.
"""

from __future__ import annotations

import hashlib
import heapq
import uuid
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import asyncpg
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opsmantik.billing.canonical import Entry, canonical, row_object
from opsmantik.billing.canonical_batch import PropertiesText, row_bodies, row_entries, sha256_hex
from opsmantik.db.queries import package_queries
from opsmantik.errors import CheckFailed
from opsmantik.months import label, months_before

Q = package_queries("opsmantik.billing", "archive.sql")
ROW_GROUP = 65536
SCHEMA = pa.schema(
    [
        ("site_id", pa.string()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("usage_month", pa.date32()),
        ("billing_month", pa.date32()),
        ("quantity", pa.int64()),
        ("billing_class", pa.string()),
        ("path", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("ledgered_at", pa.timestamp("us", tz="UTC")),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("properties", pa.string()),
        ("row_sha256", pa.string()),
    ]
)
COLUMNS = [f.name for f in SCHEMA][:-1]


class ArchiveTampered(CheckFailed):
    """An archive file differs from what was archived: exit 1, naming the row."""


def parquet_name(month: date) -> str:
    return f"ledger-{label(month)}.parquet"


def manifest_name(month: date) -> str:
    return f"ledger-{label(month)}.manifest.json"


def join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name


def records_table(records: Sequence[asyncpg.Record]) -> pa.Table:
    """Rows of archive.sql `partition_rows` (COLUMNS, in order) as an Arrow table, column-wise."""
    columns = list(zip(*records, strict=True)) if records else [()] * len(COLUMNS)
    arrays = []
    for name, values in zip(COLUMNS, columns, strict=True):
        if name == "site_id":
            values = tuple(str(v) for v in values)
        arrays.append(pa.array(values, SCHEMA.field(name).type))
    return pa.Table.from_arrays(arrays, names=COLUMNS)


def with_row_sha(table: pa.Table, properties: PropertiesText) -> pa.Table:
    """The table plus its row_sha256 column (what `opsmantik archive` writes)."""
    bodies = row_bodies(table, properties)
    if any(b is None for b in bodies):
        raise ValueError("a ledger row with a missing field cannot be archived")
    return table.append_column("row_sha256", pa.array(sha256_hex(bodies), pa.string()))


def file_sha256(url: str) -> str:
    h = hashlib.sha256()
    with fsspec.open(url, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def checked_bodies(
    url: str, table: pa.Table, positions: Sequence[int], properties: PropertiesText
) -> list[bytes]:
    """Each row's canonical bytes, checked against its row_sha256. A row whose column-wise bytes
    disagree is re-encoded by canonical.py (the definition) before it is called changed: then
    ArchiveTampered names its position in the file, site and event_id."""
    bodies = row_bodies(table, properties)
    claimed = table["row_sha256"].to_pylist()
    out: list[bytes] = []
    for i, (body, got, want) in enumerate(zip(bodies, sha256_hex(bodies), claimed, strict=True)):
        if got != want or body is None:
            row = table.slice(i, 1).to_pylist()[0]
            try:
                body = canonical(row_object(row))
            except (TypeError, ValueError, KeyError, AttributeError):
                body = None
            if body is None or hashlib.sha256(body).hexdigest() != want:
                raise ArchiveTampered(
                    f"{url}: row {positions[i]} (site {row.get('site_id')}, event_id "
                    f"{row.get('event_id')!r}) does not match its row_sha256: the archive was changed"
                )
        out.append(body)
    return out


def _group_rows(
    url: str, table: pa.Table, first: int, filters: list[tuple[str, Any]], properties: PropertiesText
) -> list[Entry]:
    missing = set(SCHEMA.names) - set(table.column_names)
    if missing:
        raise ArchiveTampered(f"{url}: the archive has no column {sorted(missing)[0]}: it was changed")
    positions: Sequence[int] = range(first, first + table.num_rows)
    if filters:
        mask = None
        for col, value in filters:
            m = pc.equal(table[col], pa.scalar(value, type=table.schema.field(col).type))
            mask = m if mask is None else pc.and_(mask, m)
        keep = pc.indices_nonzero(pc.fill_null(mask, False))
        table = table.take(keep)
        positions = [first + i for i in keep.to_pylist()]
    return row_entries(table, checked_bodies(url, table, positions, properties))


def iter_file_rows(
    url: str, *, site_id: str | None = None, billing_month: date | None = None
) -> Iterator[Entry]:
    """The rows of an archive file (optionally one site's rows of one billing month) in file order
    (site_id, event_id bytewise) as entries (canonical.Entry), checked against its row_sha256: a
    changed row raises ArchiveTampered naming it. One row group is in memory at a time."""
    filters: list[tuple[str, Any]] = []
    if site_id is not None:
        filters.append(("site_id", site_id))
    if billing_month is not None:
        filters.append(("billing_month", billing_month))
    properties = PropertiesText()
    with fsspec.open(url, "rb") as f:
        pf = pq.ParquetFile(f)
        position = 0
        site_col = pf.schema_arrow.get_field_index("site_id")
        for group in range(pf.num_row_groups):
            n = pf.metadata.row_group(group).num_rows
            stats = pf.metadata.row_group(group).column(site_col).statistics if site_col >= 0 else None
            if (  # the file is sorted by site_id: skip the groups that cannot hold the site
                site_id is not None
                and stats is not None
                and stats.has_min_max
                and not stats.min <= site_id <= stats.max
            ):
                position += n
                continue
            yield from _group_rows(url, pf.read_row_group(group), position, filters, properties)
            position += n


def check_file(url: str, recorded_sha256: str) -> None:
    """Refuse a file whose bytes differ from the archive's record, naming the first changed row."""
    actual = file_sha256(url)
    if actual == recorded_sha256:
        return
    try:
        for _ in iter_file_rows(url):  # raises on the first row that no longer matches
            pass
    except (pa.ArrowException, OSError) as exc:
        raise ArchiveTampered(f"{url}: the archive cannot be read ({exc}): it was changed") from exc
    raise ArchiveTampered(f"{url}: file sha256 {actual} != the recorded {recorded_sha256}")


async def archived_months(conn: asyncpg.Connection, billing_month: date) -> list[asyncpg.Record]:
    """Archives that can hold rows billed in `billing_month` (late rows come from <= 2 months back)."""
    return list(await conn.fetch(Q["archives_between"], months_before(billing_month, 2), billing_month))


def archived_entries(
    location_sha: list[tuple[str, str]], site_id: uuid.UUID, billing_month: date
) -> Iterator[Entry]:
    """A site's archived rows billed in `billing_month` as entries, by event_id
    (Python's str order is UTF-8's bytewise order), every file checked first; streamed: each file
    is sorted by (site_id, event_id), so a merge needs one row group per file in memory."""
    for url, sha in location_sha:
        check_file(url, sha)
    site = str(site_id)
    streams = [iter_file_rows(url, site_id=site, billing_month=billing_month) for url, _ in location_sha]
    return heapq.merge(*streams, key=lambda entry: entry[0]["event_id"])
