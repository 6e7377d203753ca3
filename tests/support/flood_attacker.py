"""The attacker of tests/support/key_flood.py (test_key_flood, the key-flood bench), in its own
process (so its CPU is not the measuring client's event loop): N connections, each request a
fresh well-formed forged key, for SECONDS of flooding in slices of SLICE seconds, each followed
by as long a pause, from START (a time.monotonic() value, which every process on the host shares)
on. Half the connections forge tagged keys (wrong MAC), half untagged ("legacy") ones. Prints one
JSON line: the answers by status and the counts per key shape.

    python -m tests.support.flood_attacker URL CONNECTIONS SECONDS START SLICE
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections import Counter

import aiohttp
import orjson

BODY = orjson.dumps(
    {"events": [{"event_id": "x", "type": "api_call", "occurred_at": "2026-01-01T00:00:00Z"}]}
)


def forged(tagged: bool) -> str:
    if tagged:  # the shape of a tagged key: omk_ + 22 + 22, tag random
        return "omk_" + secrets.token_urlsafe(16) + secrets.token_urlsafe(16)
    return "omk_" + secrets.token_urlsafe(32)  # the shape of a key issued before the MAC


def flooding(start: float, slice_s: float, now: float) -> bool:
    """Whether `now` falls in a flood slice: [start + 2kS, start + (2k+1)S)."""
    return now >= start and int((now - start) // slice_s) % 2 == 0


async def main(url: str, connections: int, seconds: float, start: float, slice_s: float) -> dict[str, object]:
    statuses: Counter[str] = Counter()
    shapes: Counter[str] = Counter()
    end = start + 2 * seconds - slice_s  # the last flood slice's end
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def conn(i: int) -> None:
            tagged = i % 2 == 0
            while (now := time.monotonic()) < end:
                if not flooding(start, slice_s, now):  # a pause: sleep to the next slice
                    await asyncio.sleep(slice_s - ((now - start) % slice_s) if now >= start else start - now)
                    continue
                headers = {"Authorization": f"Bearer {forged(tagged)}", "Content-Type": "application/json"}
                try:
                    async with http.post(url + "/api/sync", data=BODY, headers=headers) as r:
                        await r.read()
                        statuses[str(r.status)] += 1
                except aiohttp.ClientError as exc:
                    statuses[type(exc).__name__] += 1
                shapes["tagged" if tagged else "legacy"] += 1

        await asyncio.gather(*(conn(i) for i in range(connections)))
    return {"statuses": dict(statuses), "shapes": dict(shapes), "seconds": seconds}


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out = asyncio.run(
        main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
    )
    print(orjson.dumps(out).decode(), flush=True)
