"""Webhook URLs: what a rule may point at, checked at `alerts create` and again at every connect.

A receiver is hostile until proven otherwise (docs/alerts.md "Hostile receivers"): https only
(unless OPSMANTIK_ALERTS_ALLOW_HTTP=1, for development), no credentials in the URL, and no
private, loopback, link-local, multicast or reserved address (unless OPSMANTIK_ALERTS_ALLOW_PRIVATE=1)
- every address the name resolves to, so a name that also resolves inward is refused. The check
is repeated when the dispatcher connects (dispatcher.GuardedResolver, aiohttp's resolver hook): a name
that resolved to a public address at create and to 10.0.0.1 now (DNS rebinding) gets no
connection. Redirects are never followed (the dispatcher), so a 30x cannot lead inward either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from opsmantik.config import Settings
from opsmantik.errors import UsageError

MAX_URL = 2048


class BadUrl(UsageError):
    """A webhook URL that is refused; the message says why (exit 2 in the CLI)."""


@dataclass(frozen=True)
class UrlPolicy:
    allow_http: bool = False
    allow_private: bool = False

    @classmethod
    def of(cls, settings: Settings) -> UrlPolicy:
        return cls(bool(settings.alerts_allow_http), bool(settings.alerts_allow_private))


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused_address(ip: IpAddress) -> str | None:
    """Why this address may not be reached (None: a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return refused_address(ip.ipv4_mapped)
    for test, name in (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_private, "private"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not a public"),
    ):
        if test:
            return f"{ip} is a {name} address"
    return None


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int
    literal: IpAddress | None  # the host when it is an IP literal


def parse(url: str, policy: UrlPolicy) -> Target:
    """The static checks (no DNS): scheme, host, port, no credentials, an IP literal's address."""
    if not url or len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in url):
        raise BadUrl(f"--url: 1-{MAX_URL} characters, no spaces or control characters")
    parts = urlsplit(url)
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in schemes:
        hint = "" if policy.allow_http else " (http only with OPSMANTIK_ALERTS_ALLOW_HTTP=1, for development)"
        raise BadUrl(f"--url: the scheme {parts.scheme[:16]!r} must be https{hint}")
    if parts.username is not None or parts.password is not None:
        raise BadUrl("--url: no user or password in the URL (the signature authenticates us)")
    if parts.fragment:
        raise BadUrl("--url: no #fragment")
    host = parts.hostname
    if not host:
        raise BadUrl("--url: no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadUrl("--url: the port is not 1-65535") from None
    literal: IpAddress | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not policy.allow_private:
        why = refused_address(literal)
        if why:
            raise BadUrl(f"--url: {why} (allowed only with OPSMANTIK_ALERTS_ALLOW_PRIVATE=1)")
    return Target(url, host, port, literal)


def check_addresses(host: str, addresses: list[str], policy: UrlPolicy) -> None:
    """Every address `host` resolved to must be allowed (one refused address refuses the name)."""
    if not addresses:
        raise BadUrl(f"{host}: resolves to no address")
    if policy.allow_private:
        return
    for text in addresses:
        why = refused_address(ipaddress.ip_address(text.split("%", 1)[0]))
        if why:
            raise BadUrl(f"{host} resolves to {why} (allowed only with OPSMANTIK_ALERTS_ALLOW_PRIVATE=1)")


async def validate(url: str, policy: UrlPolicy) -> Target:
    """`alerts create`: the static checks, then the name resolved and every address checked."""
    target = parse(url, policy)
    if target.literal is None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise BadUrl(f"--url: {target.host} does not resolve ({exc})") from None
        check_addresses(target.host, [str(i[4][0]) for i in infos], policy)
    return target
