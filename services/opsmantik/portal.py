"""Portal tokens: a short-lived, signed credential that opens one site's dashboard (docs/dashboard.md).

A token is `omp_` + base64url(payload) + `.` + base64url(mac), where the payload is 40 bytes:
the token id (16), the site id (16) and the expiry (8, Unix seconds, big-endian), and the mac is
HMAC-SHA256 over `omp_` + the payload's text under a key derived from OPSMANTIK_KEY_SECRET
(HMAC-SHA256(secret, "opsmantik-portal-token-v1")): a portal token's MAC is never a site key's or
an operator token's, and rotating the key secret (key_secret_previous) rotates this key too.

The signature and the expiry are checked in memory; a forged or expired token costs no database
read. Revocation is a row per token (`portal_tokens`, migration 0013) read by primary key on every
dashboard request: a token is valid while its row exists, names the same site, is not revoked and
has not expired. So `revoke` takes effect from the next request, `revoke_site` ends every open
dashboard of a site, and no token is stored (only its id: the token is useless without the MAC).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from opsmantik.config import LOCAL_KEY_SECRET
from opsmantik.db.queries import package_queries
from opsmantik.errors import UsageError
from opsmantik.meters.query import iso
from opsmantik.sites import UnknownSite

Q = package_queries("opsmantik", "portal.sql")
TOKEN_PREFIX = "omp_"
DEFAULT_TTL = timedelta(hours=1)
MIN_TTL = timedelta(minutes=1)
MAX_TTL = timedelta(days=30)
_PAYLOAD = struct.Struct(">16s16sq")  # token id, site id, expiry (Unix seconds)
_PAYLOAD_CHARS = 54  # base64url of 40 bytes, unpadded
_MAC_CHARS = 43  # base64url of 32 bytes, unpadded
TOKEN_CHARS = len(TOKEN_PREFIX) + _PAYLOAD_CHARS + 1 + _MAC_CHARS
_KEY_DOMAIN = b"opsmantik-portal-token-v1"


class BadTtl(UsageError):
    """A portal token lifetime outside 1 minute to 30 days."""


@dataclass(frozen=True)
class Claims:
    """What a token's signature vouches for."""

    token_id: uuid.UUID
    site_id: uuid.UUID
    expires_at: datetime


@dataclass(frozen=True)
class NewToken:
    claims: Claims
    token: str  # shown to the caller; never stored nor logged


@dataclass(frozen=True)
class TokenInfo:
    token_id: uuid.UUID
    site_id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    created_by: str
    revoked_at: datetime | None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, signed: str) -> bytes:
    key = hmac.new(secret.encode(), _KEY_DOMAIN, hashlib.sha256).digest()
    return hmac.new(key, signed.encode(), hashlib.sha256).digest()


def sign(claims: Claims, secret: str = LOCAL_KEY_SECRET) -> str:
    payload = _PAYLOAD.pack(claims.token_id.bytes, claims.site_id.bytes, int(claims.expires_at.timestamp()))
    signed = TOKEN_PREFIX + _b64(payload)
    return f"{signed}.{_b64(_mac(secret, signed))}"


def verify(token: str, secrets_: tuple[str, ...]) -> Claims | None:
    """The claims of a token whose shape and MAC verify under one of the secrets; else None.
    The expiry is not checked here: the caller checks it, to say which refusal it was."""
    if len(token) != TOKEN_CHARS or not token.isascii() or not token.startswith(TOKEN_PREFIX):
        return None
    signed, _, mac_text = token.rpartition(".")
    try:
        mac = _unb64(mac_text)
        payload = _unb64(signed[len(TOKEN_PREFIX) :])
    except ValueError:
        return None
    if len(payload) != _PAYLOAD.size or _b64(payload) != signed[len(TOKEN_PREFIX) :]:
        return None  # one canonical text per token: no second spelling of the same bytes
    if not any(hmac.compare_digest(_mac(s, signed), mac) for s in secrets_ if s):
        return None
    token_id, site_id, expiry = _PAYLOAD.unpack(payload)
    return Claims(uuid.UUID(bytes=token_id), uuid.UUID(bytes=site_id), datetime.fromtimestamp(expiry, UTC))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(raw: str) -> timedelta:
    """`90s`, `15m`, `1h`, `7d`, or whole seconds; from MIN_TTL to MAX_TTL (BadTtl names the rule)."""
    text = raw.strip()
    unit = _UNITS.get(text[-1:], 0)
    digits = text[:-1] if unit else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 9):
        raise BadTtl(f"ttl: {raw[:40]!r} is not a duration like 15m, 1h or 7d (or whole seconds)")
    return check_ttl(timedelta(seconds=int(digits) * (unit or 1)))


def check_ttl(ttl: timedelta) -> timedelta:
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise BadTtl(f"ttl: from {MIN_TTL} to {MAX_TTL.days} days")
    return ttl


async def mint(
    conn: asyncpg.Connection,
    site_id: uuid.UUID,
    ttl: timedelta,
    created_by: str,
    *,
    secret: str = LOCAL_KEY_SECRET,
) -> NewToken:
    """A new token for the site; `secret` is the gateways' OPSMANTIK_KEY_SECRET."""
    check_ttl(ttl)
    if not await conn.fetchval(Q["site_exists"], site_id):
        raise UnknownSite(site_id)
    now = datetime.now(UTC).replace(microsecond=0)
    claims = Claims(uuid.uuid4(), site_id, now + ttl)
    async with conn.transaction():
        await conn.execute(Q["delete_expired"], now - timedelta(days=1))
        await conn.execute(Q["create_token"], claims.token_id, site_id, now, claims.expires_at, created_by)
    return NewToken(claims, sign(claims, secret))


async def active(conn: asyncpg.Connection, claims: Claims, timeout_s: float = 2.0) -> bool:
    """The token's row exists for its site, is not revoked and has not expired."""
    return bool(
        await conn.fetchval(
            Q["token_active"], claims.token_id, claims.site_id, datetime.now(UTC), timeout=timeout_s
        )
    )


async def revoke(conn: asyncpg.Connection, token_id: uuid.UUID) -> bool:
    """True when an active token was revoked (refused from the gateways' next request)."""
    return await conn.fetchval(Q["revoke_token"], token_id) is not None


async def revoke_site(conn: asyncpg.Connection, site_id: uuid.UUID) -> int:
    """Revoke every unexpired token of the site; how many."""
    return len(await conn.fetch(Q["revoke_site"], site_id))


async def list_tokens(conn: asyncpg.Connection, site_id: uuid.UUID) -> list[TokenInfo]:
    """The site's unexpired tokens (revoked ones included)."""
    return [TokenInfo(**dict(r)) for r in await conn.fetch(Q["list_tokens"], site_id, datetime.now(UTC))]


def dashboard_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/dashboard?token={token}"


def mint_answer(new: NewToken, base_url: str) -> dict[str, str]:
    """What a mint answers: POST /api/v1/portal/tokens' body and `opsmantik portal-token --json`."""
    return {
        "token": new.token,
        "url": dashboard_url(base_url, new.token),
        "expires_at": iso(new.claims.expires_at),
        "token_id": str(new.claims.token_id),
        "site_id": str(new.claims.site_id),
    }
