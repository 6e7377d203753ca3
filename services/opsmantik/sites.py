"""Sites (tenants) and their API keys. A key is shown once and stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from opsmantik.db.queries import package_queries

Q = package_queries("opsmantik", "sites.sql")
KEY_PREFIX = "omk_"


class UnknownSite(LookupError):
    def __init__(self, site_id: uuid.UUID) -> None:
        super().__init__(f"no site {site_id}")


@dataclass(frozen=True)
class Site:
    site_id: uuid.UUID
    name: str
    monthly_quota: int | None
    hard_cap: int | None
    rate_per_s: float
    burst: int
    created_at: datetime
    active_keys: int = 0


@dataclass(frozen=True)
class NewKey:
    site_id: uuid.UUID
    key_id: uuid.UUID
    api_key: str  # the only time the plain key exists


def hash_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_site(
    conn: asyncpg.Connection,
    name: str,
    *,
    monthly_quota: int | None = None,
    hard_cap: int | None = None,
    rate: float = 1000.0,
    burst: int = 2000,
) -> Site:
    row = await conn.fetchrow(Q["create_site"], name, monthly_quota, hard_cap, rate, burst)
    return Site(**dict(row))


async def list_sites(conn: asyncpg.Connection) -> list[Site]:
    return [Site(**dict(r)) for r in await conn.fetch(Q["list_sites"])]


async def create_key(conn: asyncpg.Connection, site_id: uuid.UUID) -> NewKey:
    api_key = generate_key()
    try:
        key_id = await conn.fetchval(Q["create_key"], site_id, hash_key(api_key), api_key[:10])
    except asyncpg.ForeignKeyViolationError:
        raise UnknownSite(site_id) from None
    return NewKey(site_id, key_id, api_key)


async def revoke_key(conn: asyncpg.Connection, key_id: uuid.UUID) -> bool:
    return await conn.fetchval(Q["revoke_key"], key_id) is not None


async def create_site_with_key(conn: asyncpg.Connection, name: str, **limits: object) -> NewKey:
    async with conn.transaction():
        site = await create_site(conn, name, **limits)  # type: ignore[arg-type]
        return await create_key(conn, site.site_id)
