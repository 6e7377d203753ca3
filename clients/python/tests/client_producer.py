"""A producer process for the crash test: `python client_producer.py URL KEY
SPILL N`. Sends events 0..N-1 (numbered in properties.seq, no event_id: the client assigns
one) in chunks, with `next` as the spill checkpoint, so a restarted producer continues where
the killed one handed over. Prints one JSON line per step for the test to follow."""

from __future__ import annotations

import asyncio
import json
import sys

from client_support import numbered
from opsmantik_client import AsyncClient, Backoff

CHUNK = 250


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(url: str, key: str, spill: str, total: int) -> None:
    async with AsyncClient(
        url, key, spill_path=spill, receipts=False, backoff=Backoff(base_s=0.05, cap_s=0.5)
    ) as client:
        start = int(client.checkpoint().get("next", "0"))
        say(started=start, replaying=client.pending)
        for i in range(start, total, CHUNK):
            stop = min(total, i + CHUNK)
            await client.send_many(numbered(i, stop), checkpoint={"next": str(stop)})
            say(handed_over=stop, pending=client.pending)
            await asyncio.sleep(0.01)  # a steady producer, not a burst: the kill lands mid-stream
        ok = await client.flush(120)
        say(done=ok, sent=client.counters.sent, rejected=client.counters.rejected)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
