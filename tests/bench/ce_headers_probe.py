"""What the CloudEvents headers add to the worker's billable publish, per event (issue 21).

    .venv/bin/python -m tests.bench.ce_headers_probe [--rows 20000] [--rounds 7]

The worker's per-message billable work, with and without the headers, measured in the same run
(interleaved rounds): to_billable (the value) + producer.produce (queued in librdkafka;
the producer points at a closed port, so nothing is sent and no broker is needed) + ce_headers.
Printed (min and median of the rounds) as ratios to the baseline, for /api/sync rows and for
CloudEvent rows (whose ce_subject is read from the properties). Not part of the test suite: a
2-core shared machine gives ratios, never absolute figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import orjson
from confluent_kafka import Producer
from opsmantik.gateway.cloudevents import ledger_event_id
from opsmantik.worker.billable import _iso, ce_headers, ce_source, to_billable
from opsmantik.worker.ledger import LedgerRow


def rows(n: int, cloudevents: bool, data_bytes: int) -> list[LedgerRow]:
    site = uuid.uuid4()
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        if cloudevents:
            event_id = ledger_event_id("service-0", f"e-{i}")
            data = {"duration": "12", "path": "/hello", "pad": "x" * data_bytes}
            props = {"ce": {"id": f"e-{i}", "source": "service-0", "subject": "customer-1"}, "data": data}
        else:
            event_id, props = f"order-{i}", {"plan": "pro", "pad": "x" * data_bytes}
        out.append(
            LedgerRow(
                site,
                event_id,
                "api_call",
                now - timedelta(microseconds=i),
                date(2026, 12, 1),
                date(2026, 12, 1),
                1,
                "included",
                "kafka",
                now,
                now,
                0,
                i,
                orjson.dumps(props).decode(),
            )  # fmt: skip
        )
    return out


def publish_loop(batch: list[LedgerRow], producer: Producer, headers: bool) -> float:
    """BillablePublisher.publish's per-row work (its memos included), seconds per row."""
    texts: dict[datetime, str] = {}

    def iso(ts: datetime) -> str:
        text = texts.get(ts)
        if text is None:
            text = texts[ts] = _iso(ts)
        return text

    sites: dict[object, tuple[str, bytes, bytes]] = {}
    produce = producer.produce
    started = time.perf_counter()
    for r in batch:
        site = sites.get(r.site_id)
        if site is None:
            text = str(r.site_id)
            site = sites[r.site_id] = (text, text.encode(), ce_source(text))
        value = to_billable(r, site[0], iso)
        if headers:
            produce("bench", value, site[1], headers=ce_headers(r, site[2], iso(r.occurred_at)))
        else:
            produce("bench", value, site[1])
    elapsed = time.perf_counter() - started
    producer.purge(in_queue=True, in_flight=True, blocking=False)
    producer.poll(0)
    return elapsed / len(batch)


def median_of(rounds: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(rounds))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    producer = Producer(
        {
            "bootstrap.servers": "127.0.0.1:1",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "log_level": 0,
        }
    )
    for label, ce, pad in [
        ("/api/sync rows", False, 0),
        ("CloudEvent rows", True, 0),
        ("CloudEvent, 1 KiB data", True, 1024),
    ]:
        batch = rows(args.rows, ce, pad)
        base, with_headers = [], []
        for _ in range(args.rounds):  # interleaved: the machine's load hits both alike
            base.append(publish_loop(batch, producer, headers=False))
            with_headers.append(publish_loop(batch, producer, headers=True))
        for stat in (min, statistics.median):
            b, h = stat(base), stat(with_headers)
            print(
                f"{label:24s} {stat.__name__:6s} baseline {b * 1e6:6.2f} µs/row  with headers "
                f"{h * 1e6:6.2f} µs/row  ratio {h / b:.2f}  (+{(h - b) * 1e6:.2f} µs/row)"
            )


if __name__ == "__main__":
    main()
