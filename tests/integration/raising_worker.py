"""The real worker with one planted bug, run as its own process by test_worker_integrity.py:
its batch handler raises whenever the batch holds a message whose event_id starts with
"boom". Everything else (Faust app, commit guard, supervisor, exit status) is the product's."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from opsmantik.config import Settings
from opsmantik.worker import main, processor

_begin = processor.BatchProcessor.begin  # the ledger loop's entry; handle() goes through it too


async def begin(self: processor.BatchProcessor, batch: Sequence[processor.RawMessage]) -> processor.Staged:
    if any(value and b'"event_id":"boom' in value for value, _p, _o in batch):
        raise RuntimeError("planted bug in the batch handler")
    return await _begin(self, batch)


if __name__ == "__main__":
    processor.BatchProcessor.begin = begin  # type: ignore[method-assign]
    sys.exit(main.main(Settings.from_env(), argparse.Namespace()))
