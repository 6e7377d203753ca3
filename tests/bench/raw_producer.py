"""Baseline: a raw confluent-kafka producer (acks=all, idempotent, the project's producer
settings) sending event.v1-shaped messages to the same broker as fast as it can.

`python -m tests.bench.raw_producer --bootstrap H:P --topic T --seconds S` prints one JSON line.
Latency is message create time (librdkafka's CreateTime, ms) to delivery report.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import orjson
from confluent_kafka import Producer
from opsmantik.config import Settings
from opsmantik.kafka.settings import producer_config

from tests.bench.stats import percentile


def message(site_id: str, n: int, now: str, month: str) -> bytes:
    return orjson.dumps(
        {
            "v": 1,
            "site_id": site_id,
            "event_id": f"raw-{n}",
            "type": "page_view",
            "occurred_at": now,
            "usage_month": month,
            "quantity": 1,
            "properties": {"path": "/pricing", "plan": "pro", "ref": "bench"},
            "received_at": now,
            "path": "kafka",
            "gateway_status": "accepted",
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-messages", type=int, default=5_000_000)
    args = parser.parse_args()

    settings = Settings(kafka_bootstrap=args.bootstrap)
    producer = Producer(producer_config(settings))
    site = str(uuid.uuid4())
    key = site.encode()
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())
    month = now[:8] + "01"
    lat_ms: list[float] = []
    delivered = failed = 0

    def on_delivery(err: object, msg: object) -> None:
        nonlocal delivered, failed
        if err is not None:
            failed += 1
            return
        delivered += 1
        if delivered % 10 == 0:  # a sample is plenty; keeps the callback cheap
            lat_ms.append(time.time() * 1000 - msg.timestamp()[1])  # type: ignore[attr-defined]

    producer.produce(args.topic, message(site, 0, now, month), key, on_delivery=on_delivery)
    producer.flush(30)  # connection and idempotent producer id: not part of the measurement
    delivered, lat_ms = 0, []
    t0 = time.monotonic()
    end = t0 + args.seconds
    n = 1
    while time.monotonic() < end and n < args.max_messages:
        try:
            producer.produce(args.topic, message(site, n, now, month), key, on_delivery=on_delivery)
            n += 1
        except BufferError:
            producer.poll(0.001)
            continue
        if n % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    elapsed = time.monotonic() - t0
    sys.stdout.write(
        orjson.dumps(
            {
                "events": delivered,
                "failed": failed,
                "seconds": elapsed,
                "p50_ms": percentile(lat_ms, 50),
                "p95_ms": percentile(lat_ms, 95),
                "p99_ms": percentile(lat_ms, 99),
            }
        ).decode()
        + "\n"
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
