"""Shared fixtures. Integration tests run against the real local stack (`opsmantik stack up`):
each test session gets its own database and its own topics, so sessions never collide."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.config import Settings
from services.db.migrate import migrate
from services.kafka import ensure_topics


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
async def settings(base_settings: Settings) -> AsyncIterator[Settings]:
    """Settings pointing at a fresh, migrated database and fresh topics."""
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    db = f"opsmantik_test_{tag}"
    admin = await asyncpg.connect(base_settings.database_url)
    await admin.execute(f'CREATE DATABASE "{db}"')
    url = base_settings.database_url.rsplit("/", 1)[0] + "/" + db
    s = dataclasses.replace(
        base_settings, database_url=url,
        topic=f"test.{tag}.ingest.v1", billable_topic=f"test.{tag}.billable.v1",
        worker_group=f"test-{tag}-worker",
    )
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.close()
    ensure_topics(s)
    yield s
    await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
    yield p
    await p.close()
