"""Operator tokens: a credential that reads every site's data, never a site key.

`opsmantik tokens create --operator` shows the token once and stores only its SHA-256, as site keys
are stored (services/opsmantik/sites.py). A token is `omo_` + 22 random characters (128 bits) + a
22-character tag, HMAC-SHA256 of `operator:` + the random part under OPSMANTIK_KEY_SECRET: the
gateway checks the tag in memory, so a forged token never costs a database lookup, and the
`operator:` domain means no site key's tag is ever an operator token's (nor the reverse). There is
no untagged ("legacy") form. The `omo_` prefix is not a site key's `omk_`: the ingest routes refuse
an operator token as they refuse any non-key (services/opsmantik/gateway/routes_api.py).
"""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from opsmantik.config import LOCAL_KEY_SECRET
from opsmantik.db.queries import package_queries
from opsmantik.sites import hash_key, key_tag

Q = package_queries("opsmantik", "tokens.sql")
TOKEN_PREFIX = "omo_"
TOKEN_FORMAT = re.compile(r"omo_[A-Za-z0-9_-]{44}", re.ASCII)
_IDENT_CHARS = 22  # token_urlsafe(16)
_DOMAIN = "operator:"


@dataclass(frozen=True)
class NewToken:
    token_id: uuid.UUID
    name: str
    created_at: datetime
    token: str  # the only time the plain token exists


@dataclass(frozen=True)
class TokenInfo:
    token_id: uuid.UUID
    token_prefix: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Operator:
    """The caller behind a valid, unrevoked operator token."""

    token_id: uuid.UUID
    name: str


def generate_token(secret: str = LOCAL_KEY_SECRET) -> str:
    ident = secrets.token_urlsafe(16)
    return TOKEN_PREFIX + ident + key_tag(secret, _DOMAIN + ident)


def tag_verifies(token: str, secrets_: tuple[str, ...]) -> bool:
    """The token has our shape and its tag verifies under one of the secrets (no database)."""
    if not TOKEN_FORMAT.fullmatch(token):
        return False
    ident, tag = token[4 : 4 + _IDENT_CHARS], token[4 + _IDENT_CHARS :]
    return any(hmac.compare_digest(key_tag(s, _DOMAIN + ident), tag) for s in secrets_)


async def create_token(conn: asyncpg.Connection, name: str, *, secret: str = LOCAL_KEY_SECRET) -> NewToken:
    """A new operator token; `secret` is the gateways' OPSMANTIK_KEY_SECRET (Settings.key_secret)."""
    token = generate_token(secret)
    row = await conn.fetchrow(Q["create_token"], hash_key(token), token[:10], name)
    return NewToken(row["token_id"], name, row["created_at"], token)


async def list_tokens(conn: asyncpg.Connection) -> list[TokenInfo]:
    return [TokenInfo(**dict(r)) for r in await conn.fetch(Q["list_tokens"])]


async def revoke_token(conn: asyncpg.Connection, token_id: uuid.UUID) -> bool:
    """True when an active token was revoked (the gateway refuses it from its next request)."""
    return await conn.fetchval(Q["revoke_token"], token_id) is not None


async def operator_by_token(conn: asyncpg.Connection, token: str, timeout_s: float = 2.0) -> Operator | None:
    row = await conn.fetchrow(Q["token_by_hash"], hash_key(token), timeout=timeout_s)
    return None if row is None else Operator(row["token_id"], row["name"])
