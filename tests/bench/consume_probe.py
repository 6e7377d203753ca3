"""Consumer probes: what reading the ingest topic costs, without ledger or billable work.

    python -m tests.bench.consume_probe produce   --bootstrap H:P --topic T --messages N
    python -m tests.bench.consume_probe getmany   --bootstrap H:P --topic T --messages N
    python -m tests.bench.consume_probe faust-batch  ...   (the worker's Faust app, its LedgerStage a no-op)
    python -m tests.bench.consume_probe faust-stream ...   (stock Faust: noack_take + stream.ack per message)

Each consumer mode joins its own group, reads the N messages from the beginning and prints one
JSON line: messages, seconds and CPU seconds (process time) from the first message to the last,
so start-up and group join are not counted. All under uvloop, as the worker runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

from tests.bench.raw_producer import message


class Clock:
    """First-to-last message wall and CPU time."""

    def __init__(self, total: int) -> None:
        self.total, self.seen = total, 0
        self.t0 = self.c0 = 0.0
        self.done = asyncio.Event()

    def add(self, n: int) -> None:
        if self.seen == 0:
            self.t0, self.c0 = time.monotonic(), time.process_time()
        self.seen += n
        if self.seen >= self.total and not self.done.is_set():
            self.t1, self.c1 = time.monotonic(), time.process_time()
            self.done.set()

    def result(self, mode: str) -> dict[str, object]:
        return {"mode": mode, "messages": self.seen, "seconds": self.t1 - self.t0, "cpu_s": self.c1 - self.c0}


def produce(bootstrap: str, topic: str, n: int) -> dict[str, object]:
    from confluent_kafka import Producer
    from opsmantik.config import Settings
    from opsmantik.kafka.settings import producer_config
    from opsmantik.kafka.topics import ensure_topics

    settings = Settings(
        kafka_bootstrap=bootstrap,
        topic=topic,
        topic_partitions=1,
        billable_topic=topic.replace(".ingest.", ".billable."),
    )
    ensure_topics(settings)
    producer = Producer(producer_config(settings))
    site = str(uuid.uuid4())
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())
    i = 0
    while i < n:
        try:
            producer.produce(topic, message(site, i, now, now[:8] + "01"), site.encode())
            i += 1
        except BufferError:
            producer.poll(0.01)
    left = producer.flush(120)
    return {"mode": "produce", "messages": n - left}


async def getmany(bootstrap: str, topic: str, n: int, timeout_s: float) -> dict[str, object]:
    """aiokafka directly (the client Faust wraps): getmany(2000) and a commit per batch."""
    from aiokafka import AIOKafkaConsumer

    clock = Clock(n)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"probe-getmany-{uuid.uuid4()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not clock.done.is_set() and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for records in batches.values():
                clock.add(len(records))
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
    return clock.result("getmany")


@dataclass(frozen=True)
class _Published:
    """What LedgerStage.begin returns (opsmantik.worker.pipeline.Committed)."""

    published: asyncio.Future[None]


class NoopProcessor:
    """A LedgerStage (opsmantik.worker.pipeline) standing in for BatchProcessor: counts, commits
    nothing, publishes nothing."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def begin(self, batch: Sequence[Any]) -> _Published:
        self.clock.add(len(batch))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return _Published(done)

    def fail(self, exc: BaseException) -> None:
        raise exc


def _settings(bootstrap: str, topic: str, group: str) -> Any:
    from opsmantik.config import Settings

    return Settings(kafka_bootstrap=bootstrap, topic=topic, worker_group=group, topic_partitions=1)


async def faust_batch(bootstrap: str, topic: str, n: int, timeout_s: float) -> dict[str, object]:
    """The worker's own app (services/opsmantik/worker/app.py: BatchConsumer + ledger loop), its
    LedgerStage a no-op."""
    from opsmantik.worker.app import build_app, drop_monitor

    clock = Clock(n)
    with tempfile.TemporaryDirectory(prefix="probe-faust-") as datadir:  # removed when the probe ends
        app = build_app(
            _settings(bootstrap, topic, f"probe-fbatch-{uuid.uuid4()}"),
            NoopProcessor(clock),
            Path(datadir),
        )
        await app.start()
        drop_monitor(app)
        try:
            await asyncio.wait_for(clock.done.wait(), timeout_s)
        finally:
            await asyncio.wait_for(app.stop(), 15)
    return clock.result("faust-batch")


async def faust_stream(bootstrap: str, topic: str, n: int, timeout_s: float) -> dict[str, object]:
    """Stock Faust, the worker's previous agent: noack_take(2000, within=50 ms), stream.ack per message."""
    import faust
    from opsmantik.worker.app import drop_monitor

    clock = Clock(n)
    datadir = tempfile.TemporaryDirectory(prefix="probe-faust-")  # not Faust's default ./<id>-data
    app = faust.App(
        f"probe-fstream-{uuid.uuid4()}",
        datadir=datadir.name,
        broker=f"kafka://{bootstrap}",
        autodiscover=False,
        web_enabled=False,
        store="memory://",
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_wait_empty=False,
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes)

    @app.agent(source, concurrency=1, name="probe")
    async def probe(stream: Any) -> None:
        async for events in stream.noack_take(2000, within=0.05):
            clock.add(len(events))
            for event in events:
                await stream.ack(event)

    with datadir:
        await app.start()
        drop_monitor(app)
        try:
            await asyncio.wait_for(clock.done.wait(), timeout_s)
        finally:
            await asyncio.wait_for(app.stop(), 15)
    return clock.result("faust-stream")


MODES = {"getmany": getmany, "faust-batch": faust_batch, "faust-stream": faust_stream}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.consume_probe")
    parser.add_argument("mode", choices=["produce", *MODES])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.mode == "produce":
        out = produce(args.bootstrap, args.topic, args.messages)
    else:
        out = uvloop.run(MODES[args.mode](args.bootstrap, args.topic, args.messages, args.timeout))
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0 if int(out["messages"]) >= args.messages else 1  # type: ignore[call-overload]


if __name__ == "__main__":
    sys.exit(main())
