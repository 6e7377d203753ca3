"""Where the time goes: py-spy sampling a running service, summarised as text.

py-spy attaches from outside (no code change, --nonblocking so the target is never
paused) and writes collapsed stacks ("frame;frame;frame count"). The summary lists the
functions holding the most samples on their own (self) and under them (inclusive).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

BOILERPLATE = (
    "<frozen runpy>",
    "services/opsmantik/cli/main.py",
    "(services/opsmantik/gateway/main.py)",
    "(services/opsmantik/worker/main.py)",
    "(services/opsmantik/relay/main.py)",
    "run_app (",
    "asyncio/base_events.py",
    "asyncio/runners.py",
    "asyncio/events.py",
    "threading.py",
    "Thread.run",
    "_execute_task",
    "_execute_actor",
    "Service.",
    "ServiceThread",
    "WorkerThread",
)


@dataclass(frozen=True)
class Profile:
    name: str
    samples: int
    top_self: list[tuple[str, float]]  # (frame, share of samples)
    top_inclusive: list[tuple[str, float]]
    raw: Path


def py_spy() -> str | None:
    venv = Path(sys.executable).with_name("py-spy")
    return str(venv) if venv.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--nonblocking",
            "--subprocesses",
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _frame(text: str) -> str:
    # "Class.method (path/to/file.py:123)" -> "Class.method (file.py)": lines split a function apart
    name, _, where = text.rpartition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({where})" if name else text


def summarise(name: str, raw: Path, top: int = 12) -> Profile | None:
    if not raw.exists():
        return None
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        # py-spy's --subprocesses prefixes "process NNN:..."; drop it so children merge.
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        total += n
        self_counts[frames[-1]] += n
        for f in set(frames):
            incl_counts[f] += n
    if total == 0:
        return None
    top_self = [(f, n / total) for f, n in self_counts.most_common(top)]
    # Entry frames (runpy, the CLI, run_app, the event loop, threads) hold most samples and say nothing.
    top_incl = [
        (f, n / total)
        for f, n in incl_counts.most_common()
        if n / total < 0.95 and not any(b in f for b in BOILERPLATE)
    ][:top]
    return Profile(name, total, top_self, top_incl, raw)


def markdown(p: Profile) -> str:
    lines = [
        f"**{p.name}** ({p.samples} samples of Python stacks; raw: `{p.raw.name}`)",
        "",
        "| self | function | | inclusive | function |",
        "|---:|---|---|---:|---|",
    ]
    for (fs, ss), (fi, si) in zip(p.top_self, p.top_inclusive, strict=False):
        lines.append(f"| {ss:.0%} | `{fs}` | | {si:.0%} | `{fi}` |")
    return "\n".join(lines)
