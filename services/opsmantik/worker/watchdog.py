"""Stall detection: the committed offset stopped advancing while the lag grows.

`StallDetector` is pure (time passed in); `OffsetProbe` reads the consumer group's
committed offsets and the topic's high watermarks from the broker, the view an SRE has.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition


@dataclass(frozen=True)
class Progress:
    committed: int  # sum of committed offsets over the topic's partitions
    lag: int  # sum of (high watermark - committed)


class StallDetector:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._last: Progress | None = None
        self._since = 0.0  # when the committed offset last moved
        self._lag_then = 0

    def observe(self, now: float, p: Progress) -> bool:
        """True when nothing was committed for window_s while the lag grew meanwhile."""
        if self._last is None or p.committed != self._last.committed:
            self._last, self._since, self._lag_then = p, now, p.lag
            return False
        self._last = p
        return now - self._since >= self.window_s and p.lag > self._lag_then

    def reset(self, now: float) -> None:
        self._last, self._since = None, now


class OffsetProbe:
    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        # A consumer in the worker's group that never subscribes (so never joins) nor commits:
        # it only reads the group's committed offsets and the watermarks. (AdminClient's
        # list_consumer_group_offsets aborted the process inside librdkafka after a broker
        # SIGKILL + restart: tests/integration/test_watchdog_broker_restart.py.)
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self.group, self.topic, self.partitions = group, topic, partitions

    def read(self, timeout_s: float = 5.0) -> Progress:
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        committed = {tp.partition: max(tp.offset, 0) for tp in self._consumer.committed(tps, timeout_s)}
        total, lag = 0, 0
        for p in range(self.partitions):
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout_s)
            c = committed.get(p, 0)
            total += c
            lag += max(high - c, 0)
        return Progress(total, lag)

    def close(self) -> None:
        self._consumer.close()
