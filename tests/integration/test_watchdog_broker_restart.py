"""Regression (found by scenarios 1, 5 and 8): the worker process aborted with
`rdkafka_queue.h:1086: rd_kafka_enq_once_del_source_return: Assertion eonce->refcnt > 0 failed`
(exit -6) when the broker was SIGKILLed and restarted: 8 of the first 16 chaos runs with a
broker kill. The abort is in the watchdog's OffsetProbe.read, inside librdkafka's
AdminClient.list_consumer_group_offsets (confluent-kafka 2.16.1) retrying its coordinator
request across the broker restart; Consumer.committed() survives the same fault.

Fixed by reading the group's committed offsets with Consumer.committed() (a consumer in the
worker's group that never subscribes). The probe runs in a child process (an abort cannot be
caught) while the chaos suite's private broker is killed and restarted three times; the child must
still be alive and exit 0, must have read the offsets before the first kill, and must read them
again after the last restart (a probe that only ever fails would pass a survival test). Only
KafkaException is expected while the broker is away: any other exception ends the child non-zero."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opsmantik.config import Settings
from opsmantik.kafka.topics import ensure_topics

from tests.chaos.harness import ChaosStack

pytestmark = pytest.mark.own_stack  # a private stack: make test's own-stack lane (scripts/test.sh)

CHILD = """
import sys, time
from pathlib import Path
from confluent_kafka import KafkaException
from opsmantik.worker.watchdog import OffsetProbe
probe = OffsetProbe(sys.argv[1], "probe-regression", sys.argv[2], 6)
stop, deadline = Path(sys.argv[3]), time.monotonic() + 150
while not stop.exists() and time.monotonic() < deadline:
    try:
        probe.read(timeout_s=1.0)
        print(f"read-ok {time.time():.3f}", flush=True)
    except KafkaException as exc:  # the broker is away: an error is fine, an abort is the bug
        print(f"read-error {time.time():.3f} {exc}", flush=True)
    time.sleep(0.2)
print("probe survived")
"""


def ok_reads(log: Path) -> list[float]:
    return [
        float(line.split()[1])
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("read-ok ")
    ]


async def test_offset_probe_survives_broker_sigkill_and_restart(tmp_path: Path) -> None:
    engines = ChaosStack()  # a fresh private stack on free ports
    await asyncio.to_thread(engines.up)
    settings = dataclasses.replace(
        Settings(),
        kafka_bootstrap=engines.stack.kafka_bootstrap,
        topic="chaos.probe.ingest.v1",
        billable_topic="chaos.probe.billable.v1",
    )
    await asyncio.to_thread(ensure_topics, settings)
    stop = tmp_path / "stop"
    root = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-c", CHILD, settings.kafka_bootstrap, settings.topic, str(stop)]
    log = tmp_path / "probe.log"  # a file, not a pipe: librdkafka's error logging would fill a pipe
    with open(log, "wb") as out:
        child = subprocess.Popen(args, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    first_kill = restarted = 0.0
    try:
        deadline = time.monotonic() + 20  # a first good read before any fault
        while time.monotonic() < deadline and child.poll() is None and not ok_reads(log):
            await asyncio.sleep(0.2)
        for _ in range(3):
            await asyncio.sleep(2)
            first_kill = first_kill or time.time()
            await asyncio.to_thread(engines.kill_kafka)
            await asyncio.sleep(3)
            await asyncio.to_thread(engines.start_kafka)
            restarted = time.time()
            if child.poll() is not None:
                break
        deadline = time.monotonic() + 30  # the probe reconnects on its own
        while (
            time.monotonic() < deadline
            and child.poll() is None
            and not any(t > restarted for t in ok_reads(log))
        ):
            await asyncio.sleep(0.5)
    finally:
        stop.touch()
        await asyncio.to_thread(child.wait, 60)
        await asyncio.to_thread(engines.down)
    text = log.read_text(errors="replace")
    tail = "\n".join(line for line in text.splitlines() if not line.startswith("%"))[-500:]
    assert child.returncode == 0, f"probe process exited {child.returncode}:\n{tail}"
    reads = ok_reads(log)
    assert any(t < first_kill for t in reads), f"no successful read before the first kill:\n{tail}"
    assert any(t > restarted for t in reads), f"no successful read after the last restart:\n{tail}"
