"""`opsmantik gateway --workers N`: N gateway processes on one port (SO_REUSEPORT).

The parent starts N children, each a whole gateway (`opsmantik gateway --reuse-port`) bound
to the same host:port with SO_REUSEPORT, so the kernel spreads connections over them and
each uses its own core. Each child registers in the gateway registry on its own, so the N
of a site's shared rate limit counts processes, not hosts (services/opsmantik/gateway/registry.py).
The parent restarts a child that exits (a crash costs that child's in-flight requests only)
and stops them all on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

log = logging.getLogger("opsmantik.gateway")
MAX_RESTARTS_PER_MINUTE = 5


def _child(host: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opsmantik.cli",
            "gateway",
            "--host",
            host,
            "--port",
            str(port),
            "--reuse-port",
        ]
    )


def supervise(host: str, port: int, workers: int) -> int:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = [_child(host, port) for _ in range(workers)]
    log.info(
        "gateway: %d processes on %s:%d (SO_REUSEPORT), pids %s",
        workers,
        host,
        port,
        " ".join(str(c.pid) for c in children),
    )
    restarts: list[float] = []
    code = 0
    while not stopping:
        for i, child in enumerate(children):
            if child.poll() is None:
                continue
            restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
            if len(restarts) > MAX_RESTARTS_PER_MINUTE:
                log.error("gateway processes keep exiting (last: %s); stopping", child.returncode)
                stopping, code = True, 1
                break
            log.warning("gateway process %d exited with %s; restarting", child.pid, child.returncode)
            children[i] = _child(host, port)
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return code
