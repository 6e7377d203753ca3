"""A database and topics of their own, on the shared local stack: each pytest session gets one
(tests/conftest.py), and so does each module whose assertions are global (reconcile judges every
site of a database) through `module_environment()`."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from opsmantik.config import Settings
from opsmantik.db.migrate import migrate
from opsmantik.kafka.topics import ensure_topics


async def create_environment(base: Settings) -> Settings:
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    db = f"opsmantik_test_{tag}"
    admin = await asyncpg.connect(base.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{db}"')
    finally:
        await admin.close()
    s = dataclasses.replace(
        base,
        database_url=base.database_url.rsplit("/", 1)[0] + "/" + db,
        topic=f"test.{tag}.ingest.v1",
        billable_topic=f"test.{tag}.billable.v1",
        worker_group=f"test-{tag}-worker",
    )
    conn = await asyncpg.connect(s.database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    await asyncio.to_thread(ensure_topics, s)
    return s


async def drop_environment(base: Settings, s: Settings) -> None:
    admin = await asyncpg.connect(base.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{s.database_url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


def environment_fixtures(scope: str) -> tuple[Any, Any]:
    """`settings` (a fresh, migrated database and fresh topics) and `pool` fixtures of a scope."""

    @pytest.fixture(scope=scope)
    async def settings(base_settings: Settings) -> AsyncIterator[Settings]:
        s = await create_environment(base_settings)
        yield s
        await drop_environment(base_settings, s)

    @pytest.fixture(scope=scope)
    async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
        p = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
        yield p
        await p.close()

    return settings, pool


def module_environment() -> tuple[Any, Any]:
    """`settings, pool = module_environment()` in a test module: fixtures overriding the session's."""
    return environment_fixtures("module")
