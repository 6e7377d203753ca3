"""The pipeline as it is deployed, for the suites: gateway, worker, relay and audit follower as
real processes (tests/support/process.py) against a test environment's database and topics
(tests/support/environment.py), and the messages, produce and ledger helpers the tests share.
`pipeline = pipeline_fixture(...)` is the one fixture that runs it."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg
import orjson
import pytest
from confluent_kafka import Producer
from opsmantik import sites
from opsmantik.config import Settings
from opsmantik.events import MAX_AGE, MAX_AHEAD
from opsmantik.kafka.settings import producer_config

from tests.support.process import OPSMANTIK, ROOT, Process, free_port, wait_for, wait_until

# Re-exported: the suites import them from here.
__all__ = ["OPSMANTIK", "ROOT", "Process", "free_port", "wait_for"]


def env_for(settings: Settings, **extra: object) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OPSMANTIK_DATABASE_URL": settings.database_url,
            "OPSMANTIK_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "OPSMANTIK_TOPIC": settings.topic,
            "OPSMANTIK_BILLABLE_TOPIC": settings.billable_topic,
            "OPSMANTIK_TOPIC_PARTITIONS": str(settings.topic_partitions),
            "OPSMANTIK_WORKER_GROUP": settings.worker_group,
            "OPSMANTIK_WORKER_METRICS_PORT": "0",
            "OPSMANTIK_RELAY_METRICS_PORT": "0",
            "OPSMANTIK_DB_POOL_MAX": "3",
        }
    )
    env.update({f"OPSMANTIK_{k.upper()}": str(v) for k, v in extra.items()})
    return env


COMPONENTS = ("gateway", "worker", "relay", "audit")  # the pipeline as deployed (docker-compose.yml)


def opsmantik_process(settings: Settings, log_dir: Path, name: str, *args: str, **env: object) -> Process:
    """`opsmantik <args>` against the settings' database and topics, logging to log_dir/<name>.log
    (not started yet: `.start()`). Its working directory is the checkout, as `make run`'s is (a
    test checks that the worker writes nothing there)."""
    return Process(name, [OPSMANTIK, *args], env_for(settings, **env), log_dir / f"{name}.log", cwd=ROOT)


def wait_healthz(proc: Process, url: str, timeout_s: float = 30.0) -> None:
    """Until GET url answers 200 (synchronous: fixtures and restarts run outside the event loop)."""

    def up() -> bool:
        proc.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_until(up, timeout_s, 0.05, f"{proc.name} answering {url}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{proc.tail()}") from None


@dataclass
class Pipeline:
    """Gateway, worker, relay and audit follower as real processes on one database and topics,
    sharing one environment as deployed; each on its own free ports."""

    settings: Settings
    log_dir: Path
    env: dict[str, object]
    processes: dict[str, Process]
    gateway_port: int

    @classmethod
    def start(
        cls,
        settings: Settings,
        log_dir: Path,
        components: Sequence[str] = COMPONENTS,
        *,
        relay_in_tests: bool = False,
        **env: object,
    ) -> Pipeline:
        """Start `components`. A worker never runs without a relay (an outbox nothing drains loses
        acknowledged events) unless the module's tests run the relay themselves (relay_in_tests)."""
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {COMPONENTS}")
        if "worker" in components and "relay" not in components and not relay_in_tests:
            raise ValueError("a worker never runs without a relay (or say relay_in_tests=True)")
        ports = {f"{c}_metrics_port": free_port() for c in ("worker", "relay", "audit")}
        p = cls(settings, log_dir, {**ports, **env}, {}, free_port())
        for name in sorted(components, key=COMPONENTS.index, reverse=True):  # the gateway last
            p.start_one(name)
        return p

    def _process(self, name: str, **env: object) -> Process:
        args: tuple[str, ...] = {
            "gateway": ("gateway", "--host", "127.0.0.1", "--port", str(self.gateway_port)),
            "audit": ("audit", "--follow"),
        }.get(name, (name,))
        return opsmantik_process(self.settings, self.log_dir, name, *args, **{**self.env, **env})

    def start_one(self, name: str, **env: object) -> Process:
        """Start (or start again, on the same ports) one component, with extra settings if any; the
        gateway once its /healthz answers."""
        proc = self.processes[name] = self._process(name, **env).start()
        if name == "gateway":
            wait_healthz(proc, f"{self.url}/healthz")
        return proc

    def restart(self, name: str, **env: object) -> Process:
        """SIGTERM one component (SIGKILL after the stop timeout), then start it again."""
        self.processes[name].stop()
        return self.start_one(name, **env)

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    async def kill_restart(self, name: str, down_s: float = 0.5) -> Process:
        """SIGKILL one component (requests in flight), keep it down for down_s, start it again on
        the same ports (off the event loop: the test's clients keep running meanwhile)."""
        self.kill(name)
        await asyncio.sleep(down_s)  # the outage under test, not a wait for a condition
        return await asyncio.to_thread(self.start_one, name)

    def __getitem__(self, name: str) -> Process:
        return self.processes[name]

    @property
    def worker(self) -> Process:
        return self.processes["worker"]

    @property
    def gateway(self) -> Process:
        return self.processes["gateway"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def metrics_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.env[f'{name}_metrics_port']}/metrics"

    def stop(self) -> dict[str, int | None]:
        """Stop every component, the gateway first (no new events), the audit last; exit codes."""
        return {name: self.processes[name].stop() for name in COMPONENTS if name in self.processes}

    def stop_cleanly(self) -> None:
        """Stop everything; each component must exit 0 (stopped by SIGTERM, never crashed)."""
        codes = self.stop()
        bad = {name: code for name, code in codes.items() if code != 0}
        assert not bad, "\n".join(f"{n} exited {c}:\n{self.processes[n].tail()}" for n, c in bad.items())


def pipeline_fixture(
    *components: str,
    scope: Literal["session", "package", "module", "class", "function"] = "module",
    settings: str = "settings",
    relay_in_tests: bool = False,
    **env: object,
) -> Any:
    """`pipeline = pipeline_fixture(...)` in a test module (or a support module it imports): the
    whole pipeline (or `components`) on the fixture `settings` names, with `env` settings
    overrides (e.g. worker_batch=100); stopped at the end of the scope, each process exiting 0."""

    @pytest.fixture(scope=scope)
    def pipeline(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Pipeline]:
        s = request.getfixturevalue(settings)
        p = Pipeline.start(
            s,
            tmp_path_factory.mktemp("pipeline"),
            components or COMPONENTS,
            relay_in_tests=relay_in_tests,
            **env,
        )
        try:
            yield p
        finally:
            p.stop_cleanly()

    return pipeline


def message(
    site_id: uuid.UUID,
    event_id: str,
    *,
    quantity: int = 1,
    path: str = "kafka",
    occurred_at: datetime | None = None,
    received_at: datetime | None = None,
    properties: dict[str, object] | None = None,
) -> bytes:
    """An ingest message exactly as schemas/event.v1.json has it (what the gateway
    produces). Without `received_at`: now, or for an `occurred_at` outside the gateway's window
    of now, the time it occurred (received then), as the worker takes no other (worker/message.py)."""
    now = datetime.now(UTC)
    occurred = (occurred_at or now).astimezone(UTC)
    if received_at is None:
        received_at = now if now - MAX_AGE <= occurred <= now + MAX_AHEAD else occurred
    return orjson.dumps(
        {
            "v": 1,
            "site_id": str(site_id),
            "event_id": event_id,
            "type": "api_call",
            "occurred_at": occurred.isoformat(timespec="microseconds"),
            "usage_month": occurred.date().replace(day=1).isoformat(),
            "quantity": quantity,
            "properties": properties,
            "received_at": received_at.isoformat(timespec="microseconds"),
            "path": path,
            "gateway_status": "fallback" if path == "fallback" else "accepted",
        }
    )


def produce(settings: Settings, msgs: list[tuple[bytes, bytes]], topic: str | None = None) -> None:
    """Produce (key, value) pairs durably (acks=all) and wait for every delivery."""
    p = Producer(producer_config(settings))
    errors: list[object] = []
    for key, value in msgs:
        p.produce(
            topic or settings.topic,
            value,
            key,
            on_delivery=lambda err, _m: errors.append(err) if err else None,
        )
        p.poll(0)
    assert p.flush(30) == 0
    assert not errors, errors


def count_messages(settings: Settings, topic: str, key: bytes, timeout_s: float = 20.0) -> int:
    """How many messages of this site key the topic holds (read from the start to the end); a
    key `site/event_id` (opsmantik.kafka.settings.message_key) counts for its site."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"count-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
            for p in range(settings.topic_partitions)
        }
        c.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        done: dict[int, int] = {}
        count = 0
        deadline = time.monotonic() + timeout_s
        while len(done) < sum(1 for e in ends.values() if e > 0) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            count += msg.key().split(b"/", 1)[0] == key
            if msg.offset() + 1 >= ends[msg.partition()]:
                done[msg.partition()] = 1
        assert time.monotonic() < deadline, "topic not read to its end in time"
        return count
    finally:
        c.close()


async def insert_outbox(pool: object, site_id: uuid.UUID, event_ids: list[str]) -> None:
    """Outbox rows exactly as the gateway's fallback path writes them."""
    now = datetime.now(UTC)
    await pool.executemany(  # type: ignore[attr-defined]
        "INSERT INTO ingest_fallback_buffer (site_id, event_id, payload, received_at) "
        "VALUES ($1, $2, $3, $4)",
        [(site_id, e, message(site_id, e, path="fallback", received_at=now), now) for e in event_ids],
    )


async def new_site_id(pool: asyncpg.Pool) -> uuid.UUID:
    """A site with no quota, for tests that only need somewhere to put events."""
    async with pool.acquire() as conn:
        return (await sites.create_site(conn, f"t-{uuid.uuid4().hex[:8]}")).site_id


async def ledger_count(pool: asyncpg.Pool, site: uuid.UUID) -> int:
    return await pool.fetchval("SELECT count(*) FROM ingest_idempotency WHERE site_id = $1", site)


def ledgered(pool: asyncpg.Pool, site: uuid.UUID, n: int) -> Callable[[], Awaitable[bool]]:
    """A `wait_for` check: the site has at least n ledger rows."""

    async def check() -> bool:
        return await ledger_count(pool, site) >= n

    return check
