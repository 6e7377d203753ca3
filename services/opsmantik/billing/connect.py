"""Connect for a command, or say which command starts the database (exit 3)."""

from __future__ import annotations

import sys

import asyncpg

from opsmantik.config import Settings

UNREACHABLE = 3


async def connect(settings: Settings) -> asyncpg.Connection | None:
    try:
        return await asyncpg.connect(settings.database_url, timeout=10)
    except (OSError, asyncpg.CannotConnectNowError, TimeoutError) as exc:
        print(
            f"cannot reach Postgres ({type(exc).__name__}): start it with `opsmantik stack up` "
            "(or set OPSMANTIK_DATABASE_URL)",
            file=sys.stderr,
        )
        return None
