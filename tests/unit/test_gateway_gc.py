"""The gateway freezes its start-up objects out of the collector's passes (gateway/main.py)."""

from __future__ import annotations

import gc

from aiohttp import web
from opsmantik.gateway.main import freeze_startup_objects


async def test_startup_objects_are_frozen() -> None:
    gc.unfreeze()
    keep = [object() for _ in range(100)]  # alive at "start-up"
    try:
        await freeze_startup_objects(web.Application())
        assert gc.get_freeze_count() >= len(keep)
    finally:
        gc.unfreeze()
