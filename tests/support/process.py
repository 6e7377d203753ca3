"""The one process harness: every suite and the bench start their child processes with it.

A `Process` is a command with its environment, working directory and log file: start it, wait
until it is ready (polled, never slept for), signal, kill or stop it, and read its log's tail when
something fails. It runs in its own session (process group), so a gateway's prefork children stop
with it. Stacks and ports: `free_port()`, `free_ports(n)`, `free_port_block(offsets)` — no
suite owns a fixed port.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPSMANTIK = str(ROOT / ".venv" / "bin" / "opsmantik")
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice, never a fixed one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now."""
    ports: list[int] = []
    while len(ports) < n:
        if (p := free_port()) not in ports:
            ports.append(p)
    return ports


# Engines a test stops and restarts (Kafka, Postgres) listen below the kernel's ephemeral range
# (32768+), so no outgoing connection can take their port while they are down.
BLOCK_LOW, BLOCK_HIGH = 20_000, 32_000


def free_port_block(offsets: Sequence[int], tries: int = 200) -> int:
    """A base port such that base + o is free for every o in offsets (a devstack `Stack` derives
    its controller ports from its Kafka port: base+1, or base+0..N-1 and base+100..100+N-1)."""
    top = BLOCK_HIGH - max(offsets)
    for _ in range(tries):
        base = random.randrange(BLOCK_LOW, top)
        if all(_bindable(base + o) for o in offsets):
            return base
    raise RuntimeError(f"no free block of ports {list(offsets)} in {BLOCK_LOW}-{BLOCK_HIGH}")


def stable_ports(n: int) -> list[int]:
    """n distinct free ports for listeners stopped and restarted on them (a gateway a test kills):
    below the ephemeral range, so no outgoing connection takes one meanwhile."""
    ports: list[int] = []
    while len(ports) < n:
        if (p := free_port_block([0])) not in ports:
            ports.append(p)
    return ports


@dataclass
class Process:
    """One child process and its log file (appended to across restarts)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log: Path
    cwd: Path = ROOT
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def opsmantik(cls, name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Process:
        """`opsmantik <args>`, logging to log_dir/<name>.log, not started yet."""
        return cls(name, [OPSMANTIK, *args], env, log_dir / f"{name}.log", cwd=log_dir)

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"\n==== start {time.strftime('%H:%M:%S')} {' '.join(self.argv[1:])} ====\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                list(self.argv),
                env=dict(self.env),
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` to the process alone (SIGSTOP/SIGCONT to freeze it, SIGTERM to stop it)."""
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no offset commit, no transaction end."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(STOP_TIMEOUT_S)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after timeout_s; the exit code (None: never started)."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                assert self.popen is not None
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.returncode

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return f"({self.name}: no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Fail with the log's tail when the process has exited."""
        if not self.alive():
            raise AssertionError(f"{self.name} exited with {self.returncode}:\n{self.tail()}")

    async def wait_ready(
        self, ready: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "ready"
    ) -> Process:
        """Poll `ready` until it holds; fail with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if await ready():
                return self
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} not {what} after {timeout_s}s:\n{self.tail()}")

    async def wait_http(self, url: str, timeout_s: float = 30.0) -> Process:
        """Until GET url answers 200."""
        import aiohttp

        async def up() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r,
                ):
                    return r.status == 200
            except (aiohttp.ClientError, TimeoutError, OSError):
                return False

        return await self.wait_ready(up, timeout_s, f"answering {url}")


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    timeout_s: float = 30.0,
    every_s: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll `check` until it holds (tests wait for conditions, never for a fixed time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def wait_until(
    check: Callable[[], bool], timeout_s: float = 30.0, every_s: float = 0.05, what: str = "condition"
) -> None:
    """`wait_for` for synchronous code (the chaos and bench drivers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
