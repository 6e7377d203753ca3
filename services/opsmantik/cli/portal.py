"""`opsmantik portal-token SITE [--ttl D] [--json]`, `--revoke TOKEN_ID`, `--revoke-all`: printing
and exit codes. The work is in services/opsmantik/portal.py; the token is printed once (text or
--json) and never stored nor logged."""

from __future__ import annotations

import argparse

from opsmantik import portal
from opsmantik.billing.connect import connect
from opsmantik.cli.args import OK
from opsmantik.cli.show import json_out, out
from opsmantik.config import Settings
from opsmantik.errors import NotFound


async def main(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings)
    try:
        if args.revoke is not None:
            return await _revoke(conn, args)
        if args.revoke_all:
            n = await portal.revoke_site(conn, args.site_id)
            _done({"site_id": str(args.site_id), "revoked": n}, f"revoked {n} portal tokens", args.json)
            return OK
        new = await portal.mint(conn, args.site_id, args.ttl, "cli", secret=settings.key_secret)
    finally:
        await conn.close()
    body = portal.mint_answer(new, settings.dashboard_base_url)
    if args.json:
        json_out(body)
    else:
        out(f"url: {body['url']}\nexpires_at: {body['expires_at']}\ntoken_id: {body['token_id']}")
    return OK


async def _revoke(conn: object, args: argparse.Namespace) -> int:
    ids = {t.token_id for t in await portal.list_tokens(conn, args.site_id) if t.revoked_at is None}
    if args.revoke not in ids or not await portal.revoke(conn, args.revoke):
        raise NotFound(f"no active portal token {args.revoke} of site {args.site_id}")
    _done({"token_id": str(args.revoke), "revoked": 1}, f"revoked {args.revoke}", args.json)
    return OK


def _done(body: dict[str, object], text: str, as_json: bool) -> None:
    if as_json:
        json_out(body)
    else:
        out(f"{text} (the gateways refuse it from their next request)")
