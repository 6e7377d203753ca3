"""Shared pieces of the gateway integration tests: a running app on the real stack, sites, and a
reader of the real topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import Consumer, TopicPartition
from opsmantik.config import Settings
from opsmantik.gateway.app import STATE, State, create_app
from opsmantik.sites import create_site_with_key


@dataclass
class Gateway:
    client: TestClient
    state: State


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    app = create_app(settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Gateway(client, app[STATE])
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with running_gateway(settings) as g:
        yield g


async def new_site(pool: asyncpg.Pool, **limits: object) -> tuple[uuid.UUID, str]:
    async with pool.acquire() as conn:
        key = await create_site_with_key(conn, f"test-{uuid.uuid4().hex[:8]}", **limits)
    return key.site_id, key.api_key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def event(event_id: str | None = None, **over: object) -> dict[str, object]:
    e: dict[str, object] = {
        "event_id": event_id or uuid.uuid4().hex,
        "type": "api_call",
        "occurred_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
    }
    e.update(over)
    return e


def read_topic(settings: Settings, *, idle_s: float = 1.5, max_s: float = 15.0) -> list[tuple[bytes, dict]]:
    """Every message on the test topic (blocking: run it in a thread)."""
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = c.list_topics(settings.topic, timeout=10).topics[settings.topic]
        c.assign([TopicPartition(settings.topic, p, 0) for p in meta.partitions])
        out: list[tuple[bytes, dict]] = []
        started = last = time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() - started < max_s:
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            out.append((msg.key(), orjson.loads(msg.value())))
        return out
    finally:
        c.close()


def read_at(settings: Settings, partition: int, offset: int) -> tuple[bytes, dict]:
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        c.assign([TopicPartition(settings.topic, partition, offset)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                return msg.key(), orjson.loads(msg.value())
        raise AssertionError(f"no message at {partition}/{offset}")
    finally:
        c.close()
