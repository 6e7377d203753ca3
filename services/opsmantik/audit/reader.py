"""The audit's view of the ingest topic (confluent-kafka, blocking: run it in a thread).

Two consumers that never subscribe, so neither joins a group: one in the worker's group only
reads its committed offsets; one in the audit's own group reads messages by assignment and
records the audit's position there too (for the usual lag tools; Postgres holds the truth).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from opsmantik.audit.inspection import RawMessage
from opsmantik.errors import Unavailable

LIBRDKAFKA_LOGGER = "opsmantik.audit.librdkafka"


@dataclass(frozen=True)
class Bounds:
    low: int  # first offset still on the broker
    high: int  # next offset to be written
    committed: int  # the worker group's committed offset (0 when it has none)


class ReadError(Unavailable, RuntimeError):
    pass


class TopicReader:
    def __init__(self, bootstrap: str, topic: str, worker_group: str, audit_group: str) -> None:
        common = {
            "bootstrap.servers": bootstrap,
            "enable.auto.commit": False,
            "socket.connection.setup.timeout.ms": 3000,
            "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
        }  # not raw stderr
        self.topic = topic
        self._worker = Consumer({**common, "group.id": worker_group})
        self._reader = Consumer(
            {**common, "group.id": audit_group, "enable.partition.eof": True, "auto.offset.reset": "earliest"}
        )

    def partitions(self, timeout_s: float) -> list[int]:
        meta = self._reader.list_topics(self.topic, timeout_s).topics.get(self.topic)
        if meta is None or meta.error is not None:
            raise ReadError(f"topic {self.topic}: {meta.error if meta else 'missing'}")
        return sorted(meta.partitions)

    def bounds(self, timeout_s: float) -> dict[int, Bounds]:
        parts = self.partitions(timeout_s)
        tps = [TopicPartition(self.topic, p) for p in parts]
        committed = {tp.partition: tp.offset for tp in self._worker.committed(tps, timeout_s)}
        out = {}
        for p in parts:
            low, high = self._reader.get_watermark_offsets(TopicPartition(self.topic, p), timeout_s)
            c = committed.get(p, OFFSET_INVALID)
            out[p] = Bounds(low, high, c if c >= 0 else 0)
        return out

    def read(
        self, ranges: dict[int, tuple[int, int]], max_messages: int, timeout_s: float
    ) -> tuple[list[RawMessage], dict[int, int]]:
        """Messages with start <= offset < end per partition, in order; returns them and, per
        partition, the offset up to which it was read completely (<= end)."""
        todo = {p: r for p, r in ranges.items() if r[0] < r[1]}
        done = {p: r[0] for p, r in ranges.items()}
        if not todo:
            return [], done
        self._reader.assign([TopicPartition(self.topic, p, r[0]) for p, r in todo.items()])
        out: list[RawMessage] = []
        deadline = time.monotonic() + timeout_s
        try:
            while todo and len(out) < max_messages and time.monotonic() < deadline:
                for msg in self._reader.consume(min(500, max_messages - len(out)), 0.2):
                    p = msg.partition()
                    if p not in todo:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            done[p] = todo.pop(p)[1]  # nothing more below the end
                            continue
                        raise ReadError(f"partition {p}: {err}")
                    offset, end = msg.offset(), todo[p][1]
                    assert offset is not None  # a message without an error has an offset
                    if offset >= end:
                        done[p] = todo.pop(p)[1]
                        continue
                    ts_type, ts = msg.timestamp()
                    out.append(RawMessage(p, offset, msg.key(), msg.value(), ts if ts_type else None))
                    done[p] = offset + 1
                    if offset + 1 >= end:
                        todo.pop(p)
        finally:
            self._reader.unassign()
        return out, done

    def record_position(self, positions: dict[int, int], timeout_s: float) -> None:
        """The audit group's committed offsets = audited up to (best effort; Postgres is the truth)."""
        tps = [TopicPartition(self.topic, p, o) for p, o in positions.items() if o > 0]
        if tps:
            with contextlib.suppress(KafkaException):
                self._reader.commit(offsets=tps, asynchronous=False)

    def close(self) -> None:
        for c in (self._worker, self._reader):
            with contextlib.suppress(RuntimeError):
                c.close()
