"""A minimal Faust agent, run as its own process by test_kafka_clients.py.

Reads PROBE_TOPIC from PROBE_BOOTSTRAP and writes each consumed value to PROBE_OUT,
acking only after the write, then stops once PROBE_COUNT values were seen."""

import os
import sys

import faust

BOOTSTRAP = os.environ["PROBE_BOOTSTRAP"]
TOPIC = os.environ["PROBE_TOPIC"]
COUNT = int(os.environ["PROBE_COUNT"])
OUT = os.environ["PROBE_OUT"]

app = faust.App(
    f"probe-{TOPIC}",
    broker=f"kafka://{BOOTSTRAP}",
    web_enabled=False,
    topic_partitions=6,
    datadir=os.environ.get("PROBE_DATADIR", "/tmp/faust-probe"),
)
topic = app.topic(TOPIC, value_serializer="raw")
seen = 0


@app.agent(topic, concurrency=1)
async def consume(stream):
    global seen
    async for batch in stream.noack_take(50, within=0.2):
        with open(OUT, "ab") as out:
            for ev in batch:
                out.write(ev.value + b"\n")
        for ev in batch:
            await stream.ack(ev)
        seen += len(batch)
        if seen >= COUNT:
            os._exit(0)  # done: skip Faust's slow graceful shutdown


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()
