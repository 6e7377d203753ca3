"""Read the contracts in the repository's top-level schemas/: Postgres migrations
(postgres/NNNN_name.sql), the JSON Schemas of the wire formats and the OpenAPI document.

They ship inside the package as `opsmantik.schemas` (pyproject.toml maps that package to schemas/)
and are read through importlib.resources, so an installed wheel, an editable install and a checkout
find them the same way. The reader lives here, not in schemas/__init__.py, so that mypy (which
cannot follow the mapping) type-checks it and its callers."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from typing import Any

import orjson

PACKAGE = "opsmantik.schemas"


def files() -> Traversable:
    return resources.files(PACKAGE)


def read_text(name: str) -> str:
    return files().joinpath(name).read_text(encoding="utf-8")


def json_schema(name: str) -> dict[str, Any]:
    """A JSON Schema of schemas/, e.g. `event.v1.json`."""
    loaded: dict[str, Any] = orjson.loads(read_text(name))
    return loaded


def migrations_dir() -> Traversable:
    return files().joinpath("postgres")
