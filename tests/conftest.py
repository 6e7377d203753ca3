"""Shared fixtures. Integration tests run against the real local stack (`opsmantik stack up`):
each test session gets its own database and its own topics, so sessions never collide."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.config import Settings
from tests.environment import create_environment, drop_environment


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
async def settings(base_settings: Settings) -> AsyncIterator[Settings]:
    """Settings pointing at a fresh, migrated database and fresh topics."""
    s = await create_environment(base_settings)
    yield s
    await drop_environment(base_settings, s)


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
    yield p
    await p.close()
