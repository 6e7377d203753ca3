"""Named SQL queries kept in .sql files beside the code that runs them.

A file holds blocks headed by `-- name: <query_name>`; everything up to the next
header is that query's text. Code then calls `QUERIES["insert_ledger"]`.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} defined twice")
        sql = body.strip()
        if not sql:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = sql
    return queries


def load_queries(path: Path) -> dict[str, str]:
    return parse_queries(path.read_text(encoding="utf-8"))


def package_queries(package: str, name: str) -> dict[str, str]:
    """The queries of `name` in `package` (package data, so an installed wheel finds them too)."""
    return parse_queries(resources.files(package).joinpath(name).read_text(encoding="utf-8"))
