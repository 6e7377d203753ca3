"""The pinned broker speaks to both of our clients: confluent-kafka produces (acks=all,
idempotent) and a faust-streaming agent, in its own process, consumes every message."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from confluent_kafka import Producer
from opsmantik.kafka.settings import producer_config
from opsmantik.kafka.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]


def test_confluent_produces_and_faust_consumes(settings, tmp_path):
    # A topic of its own: other tests of the session produce into settings.topic.
    probe = dataclasses.replace(
        settings, topic=settings.topic + ".probe", billable_topic=settings.billable_topic + ".probe"
    )
    ensure_topics(probe)
    messages = [f"event-{i}".encode() for i in range(60)]
    producer = Producer(producer_config(settings))
    acked = []

    def delivered(err, msg):
        assert err is None, err
        acked.append(msg.value())

    for i, value in enumerate(messages):
        producer.produce(probe.topic, key=f"site-{i % 4}", value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert sorted(acked) == sorted(messages)

    out = tmp_path / "consumed.txt"
    env = {
        **os.environ,
        "PROBE_BOOTSTRAP": settings.kafka_bootstrap,
        "PROBE_TOPIC": probe.topic,
        "PROBE_COUNT": str(len(messages)),
        "PROBE_OUT": str(out),
        "PROBE_DATADIR": str(tmp_path / "faust"),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/integration/faust_probe.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    consumed = out.read_bytes().splitlines()
    assert sorted(consumed) == sorted(messages)


def test_producer_config_is_durable(settings):
    config = producer_config(settings)
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
