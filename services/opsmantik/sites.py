"""Sites (tenants) and their API keys. A key is shown once and stored only as SHA-256.

A key is `omk_` + 22 random characters (128 bits) + a 22-character tag: HMAC-SHA256 of the random
part under the server-side OPSMANTIK_KEY_SECRET, cut to 128 bits. The gateway checks the tag in
memory, so a forged key never costs a database lookup (services/opsmantik/gateway/auth.py). Keys
issued before the tag (`omk_` + 43 random characters) are "legacy": still valid, looked up within
a budget, to be reissued (docs/runbook.md "API key secret").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from opsmantik.config import LOCAL_KEY_SECRET
from opsmantik.db.queries import package_queries
from opsmantik.errors import UnknownArgument

Q = package_queries("opsmantik", "sites.sql")
KEY_PREFIX = "omk_"
KEY_ID_BYTES = 16  # token_urlsafe(16): 22 characters
KEY_TAG_BYTES = 16  # 22 characters of base64url
MAC_KEY_LEN = len(KEY_PREFIX) + 22 + 22  # legacy keys are 4 + 43: the lengths never meet
_MAC_DOMAIN = b"opsmantik-api-key-v1\x00"


class UnknownSite(UnknownArgument, LookupError):
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


def key_tag(secret: str, ident: str) -> str:
    mac = hmac.new(secret.encode(), _MAC_DOMAIN + ident.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:KEY_TAG_BYTES]).rstrip(b"=").decode()


def generate_key(secret: str = LOCAL_KEY_SECRET) -> str:
    ident = secrets.token_urlsafe(KEY_ID_BYTES)
    return KEY_PREFIX + ident + key_tag(secret, ident)


def key_kind(api_key: str, secrets_: tuple[str, ...]) -> str:
    """ "mac" (the tag verifies under one of the secrets), "bad_mac" (shaped like a tagged key,
    tag wrong: forged, or minted under a secret we no longer hold) or "legacy" (no tag)."""
    if len(api_key) != MAC_KEY_LEN or not api_key.startswith(KEY_PREFIX):
        return "legacy"
    ident, tag = api_key[len(KEY_PREFIX) : len(KEY_PREFIX) + 22], api_key[len(KEY_PREFIX) + 22 :]
    for secret in secrets_:
        if hmac.compare_digest(key_tag(secret, ident), tag):
            return "mac"
    return "bad_mac"


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


async def create_key(
    conn: asyncpg.Connection, site_id: uuid.UUID, *, secret: str = LOCAL_KEY_SECRET
) -> NewKey:
    """A new tagged key; `secret` is the gateways' OPSMANTIK_KEY_SECRET (Settings.key_secret)."""
    api_key = generate_key(secret)
    try:
        key_id = await conn.fetchval(Q["create_key"], site_id, hash_key(api_key), api_key[:10])
    except asyncpg.ForeignKeyViolationError:
        raise UnknownSite(site_id) from None
    return NewKey(site_id, key_id, api_key)


async def revoke_key(conn: asyncpg.Connection, key_id: uuid.UUID) -> bool:
    return await conn.fetchval(Q["revoke_key"], key_id) is not None


async def create_site_with_key(
    conn: asyncpg.Connection, name: str, *, secret: str = LOCAL_KEY_SECRET, **limits: object
) -> NewKey:
    async with conn.transaction():
        site = await create_site(conn, name, **limits)  # type: ignore[arg-type]
        return await create_key(conn, site.site_id, secret=secret)
