"""Once started, the gateway raises generation 0's collection threshold (gateway/main.py,
issue 28) and leaves generations 1 and 2 theirs; a cycle formed after start-up is still collected."""

from __future__ import annotations

import gc

from aiohttp import web
from opsmantik.gateway.main import GEN0_THRESHOLD, freeze_startup_objects


async def test_generation_0_threshold_is_raised_after_start_up() -> None:
    saved = gc.get_threshold()
    gc.set_threshold(700, 11, 12)
    try:
        await freeze_startup_objects(web.Application())
        assert gc.get_threshold() == (GEN0_THRESHOLD, 11, 12)
        assert GEN0_THRESHOLD > 700
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


async def test_a_cycle_made_after_start_up_is_still_collected() -> None:
    saved = gc.get_threshold()
    try:
        await freeze_startup_objects(web.Application())
        collected: list[int] = []

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "stop":
                collected.append(info["collected"])

        gc.callbacks.append(on_gc)
        try:
            for _ in range(GEN0_THRESHOLD):  # each a dict referencing itself: garbage only gc frees
                d: dict[str, object] = {}
                d["self"] = d
            del d
        finally:
            gc.callbacks.remove(on_gc)
        assert sum(collected) > 0  # the raised threshold was reached and a pass freed the cycles
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
