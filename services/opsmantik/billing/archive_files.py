"""Reading the ledger's Parquet archives (`opsmantik archive`, services/opsmantik/billing/archive.py).

Every row read is checked against its row_sha256 (the SHA-256 of its canonical bytes,
services/opsmantik/billing/canonical.py): a changed row raises ArchiveTampered naming its position,
site and event_id; a file whose bytes differ from the SHA-256 recorded in ledger_archives is refused
before it is used. The dispute export and `billing close` read archived months through
opsmantik.billing.entries, which calls `archived_rows`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

import asyncpg
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opsmantik.billing.canonical import canonical, row_object
from opsmantik.db.queries import package_queries
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


class ArchiveTampered(Exception):
    """An archive file differs from what was archived: exit 1, naming the row."""


def parquet_name(month: date) -> str:
    return f"ledger-{label(month)}.parquet"


def manifest_name(month: date) -> str:
    return f"ledger-{label(month)}.manifest.json"


def join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name


def row_sha(r: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(row_object(r))).hexdigest()


def file_sha256(url: str) -> str:
    h = hashlib.sha256()
    with fsspec.open(url, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def iter_file_rows(
    url: str, *, site_id: str | None = None, billing_month: date | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of an archive file (optionally one site's rows of one billing month), each checked
    against its row_sha256: a changed row raises ArchiveTampered naming it."""
    filters: list[tuple[str, str, Any]] = []
    if site_id is not None:
        filters.append(("site_id", "=", site_id))
    if billing_month is not None:
        filters.append(("billing_month", "=", billing_month))
    with fsspec.open(url, "rb") as f:
        pf = pq.ParquetFile(f)
        position = 0
        site_col = pf.schema_arrow.get_field_index("site_id")
        for group in range(pf.num_row_groups):
            meta = pf.metadata.row_group(group)
            n = meta.num_rows
            stats = meta.column(site_col).statistics
            if (  # the file is sorted by site_id: skip the groups that cannot hold the site
                site_id is not None
                and stats is not None
                and stats.has_min_max
                and not stats.min <= site_id <= stats.max
            ):
                position += n
                continue
            table = pf.read_row_group(group)
            if filters:
                mask = None
                for col, _, value in filters:
                    m = pc.equal(table[col], pa.scalar(value, type=table.schema.field(col).type))
                    mask = m if mask is None else pc.and_(mask, m)
                keep = set(i for i, v in enumerate(mask.to_pylist()) if v) if mask is not None else None
            else:
                keep = None
            for i, r in enumerate(table.to_pylist()):
                if keep is not None and i not in keep:
                    continue
                claimed = r.pop("row_sha256")
                if row_sha(r) != claimed:
                    raise ArchiveTampered(
                        f"{url}: row {position + i} (site {r['site_id']}, event_id {r['event_id']!r}) "
                        "does not match its row_sha256: the archive was changed"
                    )
                yield r
            position += n


def check_file(url: str, recorded_sha256: str) -> None:
    """Refuse a file whose bytes differ from the archive's record, naming the first changed row."""
    actual = file_sha256(url)
    if actual == recorded_sha256:
        return
    for _ in iter_file_rows(url):  # raises on the first row that no longer matches
        pass
    raise ArchiveTampered(f"{url}: file sha256 {actual} != the recorded {recorded_sha256}")


async def archived_months(conn: asyncpg.Connection, billing_month: date) -> list[asyncpg.Record]:
    """Archives that can hold rows billed in `billing_month` (late rows come from <= 2 months back)."""
    return list(await conn.fetch(Q["archives_between"], months_before(billing_month, 2), billing_month))


def archived_rows(
    location_sha: list[tuple[str, str]], site_id: uuid.UUID, billing_month: date
) -> list[dict[str, Any]]:
    """A site's archived rows billed in `billing_month`, by event_id bytewise, every file checked."""
    out: list[dict[str, Any]] = []
    for url, sha in location_sha:
        check_file(url, sha)
        out.extend(iter_file_rows(url, site_id=str(site_id), billing_month=billing_month))
    out.sort(key=lambda r: r["event_id"].encode())
    return out
