"""Connect for a command, or raise Unavailable naming the command that starts the database (exit 3)."""

from __future__ import annotations

import asyncpg

from opsmantik.config import Settings
from opsmantik.errors import Unavailable


async def connect(settings: Settings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(settings.database_url, timeout=10)
    except (OSError, asyncpg.CannotConnectNowError, TimeoutError) as exc:
        raise Unavailable(
            f"cannot reach Postgres ({type(exc).__name__}): start it with `opsmantik stack up` "
            "(or set OPSMANTIK_DATABASE_URL)"
        ) from exc
