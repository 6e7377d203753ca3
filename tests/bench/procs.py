"""The CPU the benchmark's processes (and the engines) use, and programs run to their end. Its
long-running services are tests.support.process.Process.

CPU comes from /proc/<pid>/stat (utime + stime, clock ticks) summed over a process
tree, so a multi-process gateway or Postgres' backends are all counted.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces: fields start after the last ')'.
    return text.rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return kids


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo and len(out) < 10_000:  # bound: a process tree is small
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime (and waited-for children's) of every live process in the trees of pids."""
    total = 0.0
    for root in pids:
        for p in tree(root):
            f = _stat_fields(p)
            if f is None:
                continue
            # fields after ')': state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
            total += sum(int(x) for x in f[11:15]) * TICK_S
    return total


@dataclass
class CpuMeter:
    """CPU seconds used by some process trees between start() and stop()."""

    pids: Sequence[int]
    started: float = 0.0
    used: float = 0.0
    wall: float = 0.0
    _t0: float = field(default=0.0, repr=False)

    def start(self) -> CpuMeter:
        self.started = cpu_seconds(self.pids)
        self._t0 = time.monotonic()
        return self

    def stop(self) -> float:
        self.used = cpu_seconds(self.pids) - self.started
        self.wall = time.monotonic() - self._t0
        return self.used


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float  # the child's own user + system time, from wait4


def run_child(argv: list[str], env: dict[str, str] | None, timeout_s: float) -> ChildRun:
    """Run a program to its end and return its output and the CPU it used. wait4 reports that
    child alone (RUSAGE_CHILDREN would also count any other child reaped meanwhile)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        timer = threading.Timer(timeout_s, proc.kill)  # bound: a hung child cannot hang the bench
        timer.start()
        try:
            assert proc.stdout is not None
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, tell Popen
        err.seek(0)
        return ChildRun(
            proc.returncode,
            out.decode(errors="replace"),
            err.read().decode(errors="replace"),
            usage.ru_utime + usage.ru_stime,
        )


def engine_pids(kafka_pid: int | None, pg_pid: int | None) -> list[int]:
    return [p for p in (kafka_pid, pg_pid) if p]
