"""The asyncpg pool, built from settings."""

from __future__ import annotations

import asyncpg

from opsmantik.config import Settings


async def create_pool(settings: Settings, **kwargs: object) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        **kwargs,
    )
