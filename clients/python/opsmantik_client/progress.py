"""The backfill's progress line on stderr: events/s, retries, pending, ETA.

On a terminal it rewrites one line; otherwise (a log file, CI) it prints a line every few
seconds so the log stays readable.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def eta_text(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 360_000:
        return "--:--"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def eta_s(
    done: int, read_events: int, read_bytes: int, total_bytes: int | None, pending: int, rate: float
) -> float | None:
    """Events still to answer (pending + the unread part of the input, estimated from the
    bytes per event so far) divided by the answer rate."""
    if rate <= 0:
        return None
    left = pending
    if total_bytes is not None and read_events:
        left += max(0, total_bytes - read_bytes) * read_events / max(1, read_bytes)
    elif total_bytes is None and not done:
        return None
    return left / rate


@dataclass
class Progress:
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    every_s: float = 0.5
    plain_every_s: float = 5.0
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0
    _width: int = 0

    def update(self, done: int, retries: int, pending: int, eta: float | None, force: bool = False) -> None:
        now = time.monotonic()
        tty = self.stream.isatty()
        if not force and now - self._last < (self.every_s if tty else self.plain_every_s):
            return
        self._last = now
        elapsed = max(1e-6, now - self.started)
        line = (
            f"{done:,} events  {done / elapsed:,.0f} ev/s  retries {retries:,}  "
            f"pending {pending:,}  ETA {eta_text(eta)}"
        )
        if tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.stream.isatty() and self._width:
            self.stream.write("\n")
            self.stream.flush()
