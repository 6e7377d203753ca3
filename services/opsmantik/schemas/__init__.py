"""The package's data: Postgres migrations (postgres/NNNN_name.sql), the JSON Schemas of the
wire formats and the OpenAPI document. Read through importlib.resources, so an installed wheel
and a checkout find them the same way."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from typing import Any

import orjson


def files() -> Traversable:
    return resources.files(__name__)


def read_text(name: str) -> str:
    return files().joinpath(name).read_text(encoding="utf-8")


def json_schema(name: str) -> dict[str, Any]:
    """A JSON Schema of this folder, e.g. `event.v1.json`."""
    loaded: dict[str, Any] = orjson.loads(read_text(name))
    return loaded


def migrations_dir() -> Traversable:
    return files().joinpath("postgres")
