"""Apply schemas/postgres/NNNN_name.sql in order, once each, recorded in schema_migrations.

Idempotent and safe to run concurrently (an advisory lock serialises runners). A
migration edited after it was applied is refused: its checksum no longer matches.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.abc import Traversable

import asyncpg

from opsmantik import schema_files
from opsmantik.db import partitions
from opsmantik.db.queries import package_queries
from opsmantik.errors import CheckFailed

Q = package_queries("opsmantik.db", "migrate.sql")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(CheckFailed, RuntimeError):
    pass


def discover(directory: Traversable | None = None) -> list[Migration]:
    directory = directory or schema_files.migrations_dir()
    found = []
    for path in sorted((p for p in directory.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(match[1], match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version in {directory}")
    return found


async def migrate(conn: asyncpg.Connection, directory: Traversable | None = None) -> list[str]:
    """Apply pending migrations; return the versions applied (empty when up to date)."""
    migrations = discover(directory)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute(Q["lock_migrations"])
        await conn.execute(Q["create_schema_migrations"])
        applied = {r["version"]: r["checksum"] for r in await conn.fetch(Q["applied_migrations"])}
        for m in migrations:
            if m.version in applied:
                if applied[m.version] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version}_{m.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            await conn.execute(m.sql)
            await conn.execute(Q["record_migration"], m.version, m.name, m.checksum)
            applied_now.append(m.version)
        # the ledger's month partitions around today (0009): every run keeps two months ahead
        if await partitions.is_partitioned(conn):
            await partitions.ensure_ahead(conn)
    return applied_now
