"""`opsmantik billing verify FILE`: recompute a dispute export's digest and totals offline.

Needs nothing but the file (NDJSON or CSV, as GET /api/billing/dispute-export sends them; `-`
reads stdin), so a customer and an operator run the same check. Reads line by line (flat memory).
Checks, naming the line and event_id of the first problems found:
- every entry parses and has exactly its kind's fields; its own `sha256` matches its content;
- entries are in canonical order (rows, then voids, each by event_id) and of one site and month;
- the summary (last line) is present once; its totals and `sha256` equal the recomputed ones;
  its statement's sha256 (closed months) and its invoice equal them too.
Exit 0 match, 1 mismatch, 2 the file cannot be read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opsmantik.billing.canonical import KEYS, ROW_FIELDS, Digest, canonical, loads, properties_text
from opsmantik.errors import UsageError

MAX_PROBLEMS = 20
CSV_COLUMNS = (
    *ROW_FIELDS,
    # the void entry's own fields (VOID_KEYS not in ROW_KEYS)
    "billed_month",
    "booked_month",
    "adjustment",
    "reason",
    "voided_by",
    "voided_at",
    "sha256",
    "summary",
)
_INTS = {"quantity", "kafka_partition", "kafka_offset"}
_BOOLS = {"late", "adjustment"}


def csv_record(obj: dict[str, Any], sha256: str) -> list[str]:
    """An entry as a CSV record (CSV_COLUMNS); verify turns it back into the same object."""
    out = []
    for c in CSV_COLUMNS[:-2]:
        v = obj.get(c)
        if c == "properties" and obj["kind"] == "row":
            out.append("" if v is None else properties_text(v))
        elif isinstance(v, bool):
            out.append("true" if v else "false")
        else:
            out.append("" if v is None else str(v))
    return [*out, sha256, ""]


def _from_csv(rec: dict[str, str]) -> dict[str, Any]:
    kind = rec.get("kind", "")
    if kind == "summary":
        summary: dict[str, Any] = json.loads(rec["summary"])
        return summary
    if kind in KEYS:  # a column of the other kind filled in is a change, not an empty cell
        stray = [c for c in CSV_COLUMNS if rec.get(c) and c not in KEYS[kind] and c != "sha256"]
        if stray:
            raise ValueError(f"column {stray[0]!r} must be empty for a {kind}")
    obj: dict[str, Any] = {}
    for c in KEYS.get(kind, ()):
        raw = rec.get(c, "")
        if c in _INTS:
            obj[c] = None if raw == "" else int(raw)
        elif c in _BOOLS:
            if raw not in ("true", "false"):
                raise ValueError(f"{c}: expected true or false")
            obj[c] = raw == "true"
        elif c == "properties":
            obj[c] = None if raw == "" else loads(raw)
        else:
            obj[c] = raw
    obj["sha256"] = rec.get("sha256", "")
    if kind not in KEYS:
        obj["kind"] = kind
    return obj


def _lines(stream: io.TextIOBase) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, parsed object or None, error) for each record of NDJSON or CSV."""
    first = stream.readline()
    if first.startswith("{") or not first:
        number, line = 1, first
        while line:
            if line.strip():
                try:
                    yield number, loads(line), ""
                except ValueError as exc:
                    yield number, None, f"not valid JSON ({exc.args[0][:60]})"
            number, line = number + 1, stream.readline()
        return
    header = next(csv.reader([first]))
    if tuple(header) != CSV_COLUMNS:
        yield 1, None, "CSV header is not the dispute export's columns"
        return
    reader = csv.DictReader(stream, fieldnames=header)
    for rec in reader:
        number = reader.line_num + 1
        try:
            yield number, _from_csv(rec), ""
        except (ValueError, TypeError, KeyError) as exc:
            yield number, None, f"cannot be read ({exc})"


@dataclass
class Result:
    problems: list[str] = field(default_factory=list)
    entries: int = 0
    sha256: str = ""
    summary: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(stream: io.TextIOBase) -> Result:
    res = Result()
    digest = Digest()
    last: tuple[int, str] = (0, "")  # (kind rank, event_id) of the previous entry
    scope: tuple[str, str] | None = None  # (site_id, month) of the entries

    def problem(text: str) -> None:
        if len(res.problems) < MAX_PROBLEMS:
            res.problems.append(text)

    for number, obj, err in _lines(stream):
        if obj is None or not isinstance(obj, dict):
            problem(f"line {number}: {err or 'not a JSON object'}")
            continue
        if res.summary is not None:
            problem(f"line {number}: entry after the summary line")
        kind = obj.get("kind")
        if kind == "summary":
            res.summary = obj
            continue
        name = f"line {number} (event_id {obj.get('event_id')!r})"
        claimed = obj.pop("sha256", None)
        if kind not in KEYS or set(obj) != KEYS[kind]:
            problem(f"{name}: not a ledger row or void entry (fields differ)")
            continue
        try:
            body = canonical(obj)
        except (TypeError, ValueError) as exc:
            problem(f"{name}: cannot be encoded ({exc})")
            continue
        if hashlib.sha256(body).hexdigest() != claimed:
            problem(f"{name}: content does not match its sha256 (the row was changed)")
        key = (0 if kind == "row" else 1, obj["event_id"])
        if (key[0], key[1].encode()) <= (last[0], last[1].encode()) and res.entries:
            problem(f"{name}: out of canonical order (rows, then voids, each by event_id)")
        last = key
        where = (obj["site_id"], obj["billing_month"] if kind == "row" else obj["booked_month"])
        if scope is None:
            scope = where
        elif where != scope:
            problem(f"{name}: site or month {where} differs from the file's {scope}")
        res.entries += 1
        digest.add(obj, body)
    res.sha256 = digest.hexdigest()
    s = res.summary
    if s is None:
        problem("no summary line: the file is truncated or is not a dispute export")
        return res
    if s.get("sha256") != res.sha256:
        problem(f"summary: the entries' SHA-256 is {res.sha256}, the summary says {s.get('sha256')}")
    totals = digest.totals.as_dict()
    for k, v in totals.items():
        if s.get("totals", {}).get(k) != v:
            problem(f"summary: {k} is {v} over the entries, the summary says {s.get('totals', {}).get(k)}")
    if scope is not None and (s.get("site_id"), s.get("month")) != scope:
        problem(f"summary: site/month {(s.get('site_id'), s.get('month'))} differ from the entries' {scope}")
    statement = s.get("statement")
    if statement is not None and statement.get("sha256") != res.sha256:
        problem(f"statement: recorded sha256 {statement.get('sha256')} != the entries' {res.sha256}")
    invoice = s.get("invoice") or {}
    for k in ("events", "quantity", "overlimit_events", "overlimit_quantity"):
        if invoice.get(k) != totals[k]:
            problem(f"invoice: {k} {invoice.get(k)} != {totals[k]} over the entries")
    return res


def open_export(path: str) -> io.TextIOBase:
    """The export at `path` (- for stdin), or UsageError naming the file that cannot be read."""
    try:
        # surrogateescape: a byte that is not UTF-8 fails its own line (cannot be encoded), not the file
        if path == "-":
            return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", newline="")
        return open(path, encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def verify_file(path: str) -> Result:
    stream = open_export(path)
    try:
        return verify(stream)
    finally:
        stream.close()
