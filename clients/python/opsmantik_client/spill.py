"""The spill: every event the caller handed over and the gateway has not acknowledged, in one
SQLite file (WAL). It is the client's queue, not a side copy: an event is in the spill before
send() returns and leaves it only once the gateway answered for it, so a producer killed at
any instant loses nothing, and the next start sends what is left with the same event_ids.

One process at a time: an exclusive lock on `<path>.lock` (released by the kernel when the
process dies, so a crash never leaves a stale lock). `":memory:"` is a spill without a file.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

MEMORY = ":memory:"


def _load_queries() -> dict[str, str]:
    """`-- name: x` blocks of spill.sql (the server's named-query convention,
    services/opsmantik/db/queries.py,
    repeated here because this distribution imports nothing from the server)."""
    text = Path(__file__).with_name("spill.sql").read_text()
    parts = re.split(r"^--\s*name:\s*([a-z_]+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


Q = _load_queries()


class SpillError(RuntimeError):
    pass


class SpillLocked(SpillError):
    """Another live process uses this spill file."""


class SpillFull(SpillError):
    """The spill reached its configured size; the caller chose to be told (on_full="raise")."""


@dataclass(frozen=True)
class Row:
    seq: int
    event_id: str
    body: bytes


class Spill:
    def __init__(self, path: str | os.PathLike[str], max_bytes: int, durable: bool = False) -> None:
        self.path = str(path)
        self.max_bytes = max_bytes
        self._lock_fd: int | None = None
        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SpillLocked(
                    f"spill {self.path} is in use by another process; give each producer its own spill_path"
                ) from None
            self._lock_fd = fd
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != MEMORY:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit is in the OS before we go on (survives a process crash); FULL
            # also fsyncs each commit (survives a power loss, costs a disk flush per send).
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute(Q["create_events"])
        self._db.execute(Q["create_meta"])
        if self.path != MEMORY:
            os.chmod(self.path, 0o600)  # event bodies may be business data
        count, size, first, last = self._db.execute(Q["totals"]).fetchone()
        self.count: int = count
        self.bytes: int = size
        self.first_seq: int | None = first  # where a restarted producer resumes sending
        self._next_seq: int = last + 1  # ours alone (the lock), so never reused while we run

    def room_for(self, size: int) -> bool:
        return self.bytes + size <= self.max_bytes

    def append(self, items: list[tuple[str, bytes]], meta: dict[str, str] | None = None) -> int:
        """Store events (and the caller's checkpoint) in one transaction; return the first
        sequence number (the rest follow one by one: one writer, one transaction)."""
        db = self._db
        first = self._next_seq
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(Q["insert_event"], [(first + i, e, b) for i, (e, b) in enumerate(items)])
            if meta:
                db.executemany(Q["set_meta"], list(meta.items()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._next_seq += len(items)
        self.count += len(items)
        self.bytes += sum(len(b) for _, b in items)
        return first

    def read(self, from_seq: int, limit: int) -> list[Row]:
        return [Row(s, e, b) for s, e, b in self._db.execute(Q["read_from"], (from_seq, limit))]

    def remove(self, seqs: list[int], size: int) -> None:
        """Forget answered events; `seqs` ascending (a batch is cut in spill order)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if seqs[-1] - seqs[0] == len(seqs) - 1:  # ascending and unique, so consecutive
                db.execute(Q["delete_range"], (seqs[0], seqs[-1]))
            else:
                db.executemany(Q["delete_event"], [(s,) for s in seqs])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.count -= len(seqs)
        self.bytes -= size

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute(Q["get_meta"]).fetchall())

    def clear_meta(self) -> None:
        self._db.execute(Q["clear_meta"])

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
