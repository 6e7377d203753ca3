"""`opsmantik run` (`make run`): the whole pipeline in the foreground.

Stack, migrations, a demo site with a fresh key, then gateway, worker, relay and the capture
audit (`opsmantik audit --follow`) as child processes. Ctrl-C stops the children, then the
engines this command started (data stays in .local/). A child that exits is restarted, as
systemd's Restart=always would (the worker exits on purpose rather than skip an event); one
that keeps crashing stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import asyncpg

from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.db.migrate import migrate
from opsmantik.devstack.stack import LOCAL, Stack
from opsmantik.kafka.topics import ensure_topics

DEMO_SITE = "demo"
SERVICES = ("gateway", "worker", "relay", "audit")
MAX_RESTARTS_PER_MINUTE = 5


async def _prepare(settings: Settings) -> sites.NewKey:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn)
        demo = next((s for s in await sites.list_sites(conn) if s.name == DEMO_SITE), None)
        if demo is None:
            return await sites.create_site_with_key(conn, DEMO_SITE, secret=settings.key_secret)
        return await sites.create_key(conn, demo.site_id, secret=settings.key_secret)
    finally:
        await conn.close()


def _curl(port: int, api_key: str) -> str:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    body = f'{{"event_id": "demo-{int(time.time())}", "type": "api_call", "occurred_at": "{now}"}}'
    return (
        f"curl -sS -X POST http://127.0.0.1:{port}/api/sync \\\n"
        f"  -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(body)}"
    )


def _spawn(name: str, port: int, gateway_workers: int = 1) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "opsmantik.cli", name]
    if name == "gateway":
        cmd += ["--port", str(port), "--workers", str(gateway_workers)]
    elif name == "audit":
        cmd += ["--follow"]
    print(f"  {name}: starting ({' '.join(cmd[2:])})")
    env = {**os.environ, "OPSMANTIK_WORKER_DATA_DIR": str(LOCAL / "faust")}
    return subprocess.Popen(cmd, start_new_session=True, env=env)


def _stop(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for name, proc in children.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"  {name}: did not stop in time, killing")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(settings: Settings, args: argparse.Namespace) -> int:
    port = args.port or settings.gateway_port
    # One gateway process per core by default (they share each site's rate: registry.py).
    gateway_workers = getattr(args, "gateway_workers", None) or os.cpu_count() or 1
    stack = dataclasses.replace(Stack.local(), kafka_heap=settings.kafka_heap)
    started = stack.up()
    print(f"stack: {'started ' + ', '.join(started) if started else 'already running'}")
    key = asyncio.run(_prepare(settings))
    ensure_topics(settings)
    print(f"demo site {key.site_id}\n  api key (new for this run): {key.api_key}")

    children: dict[str, subprocess.Popen[bytes]] = {}
    # SIGTERM behaves like Ctrl-C: a clean stop.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    code = 0
    try:
        for name in SERVICES:
            children[name] = _spawn(name, port, gateway_workers)
        print("\nready. Send an event:\n" + _curl(port, key.api_key) + "\n\nCtrl-C stops everything.")
        restarts: dict[str, list[float]] = {name: [] for name in children}
        while True:
            for name, proc in list(children.items()):
                if proc.poll() is None:
                    continue
                recent = [t for t in restarts[name] if time.monotonic() - t < 60] + [time.monotonic()]
                restarts[name] = recent
                if len(recent) > MAX_RESTARTS_PER_MINUTE:
                    print(f"{name} keeps exiting ({proc.returncode}); stopping", file=sys.stderr)
                    raise SystemExit(1)
                print(f"{name} exited with {proc.returncode}; restarting", file=sys.stderr)
                time.sleep(1)
                children[name] = _spawn(name, port, gateway_workers)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping")
    except SystemExit as exc:
        code = int(exc.code or 1)
    finally:
        _stop(children)
        stopped = [e for e in started if e == "kafka" and stack.kafka_down()]
        stopped += [e for e in started if e == "postgres" and stack.pg_down()]
        print(f"stopped: {', '.join([*children, *stopped]) or 'nothing'}")
    return code
