"""The one shape of the gateway's per-minute rollups (SLO: per instance; SLA: per site): a row of
named integer counters per key, added to on the request path, flushed by swapping the dict out.
A failed write adds its counts back, so the next flush writes them; counts are upserted (added),
so several gateways share a minute."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class Counters(Generic[K]):
    fields: tuple[str, ...]
    rows: dict[K, list[int]] = field(default_factory=dict)

    def row(self, key: K) -> list[int]:
        """The key's counters (created at zero), indexed like `fields`."""
        counts = self.rows.get(key)
        if counts is None:
            counts = self.rows[key] = [0] * len(self.fields)
        return counts

    def get(self, key: K, name: str) -> int:
        return self.rows[key][self.fields.index(name)]

    def take(self) -> dict[K, list[int]]:
        """Every row so far; counting goes on into fresh rows."""
        taken, self.rows = self.rows, {}
        return taken

    def restore(self, taken: dict[K, list[int]]) -> None:
        """Add rows whose write failed back, for the next flush."""
        for key, counts in taken.items():
            kept = self.row(key)
            for i, v in enumerate(counts):
                kept[i] += v
