"""The CLI's output half: the only writes to stdout and stderr in the package (docs/cli.md).

stdout is the result (text for people, one JSON document with --json); stderr is for problems and
progress, so `--json` output stays parseable while a command reports progress."""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson


def out(text: str) -> None:
    print(text)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# Two JSON spellings, each byte-for-byte what its commands printed before the CLI printed for them:
# `{"a": 1}` (stdlib: stack, migrate, sites, keys, archive, billing verify) and `{"a":1}` (orjson:
# the rest). Values that are neither JSON nor orjson-native (Decimal...) print as str.
def json_out(obj: Any) -> None:
    print(json.dumps(obj, default=str))


def json_compact_out(obj: Any) -> None:
    print(orjson.dumps(obj, default=str).decode())
