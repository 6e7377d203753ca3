"""`opsmantik tokens create --operator | list | revoke TOKEN_ID`: printing and exit codes.

The work is in services/opsmantik/tokens.py. A new token is printed once (text or --json) and
never again: only its SHA-256 is stored, and nothing here logs it.
"""

from __future__ import annotations

import argparse

from opsmantik import tokens
from opsmantik.billing.connect import connect
from opsmantik.cli.args import OK
from opsmantik.cli.show import json_out, out
from opsmantik.config import Settings
from opsmantik.errors import NotFound


async def cmd_create(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings)
    try:
        new = await tokens.create_token(conn, args.name, secret=settings.key_secret)
    finally:
        await conn.close()
    if args.json:
        json_out(
            {
                "token_id": str(new.token_id),
                "kind": "operator",
                "name": new.name,
                "created_at": new.created_at.isoformat(),
                "token": new.token,
            }
        )
    else:
        out(
            f"token_id: {new.token_id}\ntoken: {new.token}\n"
            "(an operator token reads every site; it is shown only once)"
        )
    return OK


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings)
    try:
        rows = await tokens.list_tokens(conn)
    finally:
        await conn.close()
    if args.json:
        json_out(
            [
                {
                    "token_id": str(t.token_id),
                    "kind": "operator",
                    "name": t.name,
                    "prefix": t.token_prefix,
                    "created_at": t.created_at.isoformat(),
                    "revoked_at": None if t.revoked_at is None else t.revoked_at.isoformat(),
                }
                for t in rows
            ]
        )
        return OK
    out(f"{'token_id':36}  {'kind':8} {'prefix':10} {'name':20} state")
    for t in rows:
        state = "active" if t.revoked_at is None else f"revoked {t.revoked_at:%Y-%m-%d %H:%M}"
        out(f"{t.token_id}  {'operator':8} {t.token_prefix:10} {t.name[:20]:20} {state}")
    return OK


async def cmd_revoke(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings)
    try:
        revoked = await tokens.revoke_token(conn, args.token_id)
    finally:
        await conn.close()
    if not revoked:
        raise NotFound(f"no active token {args.token_id}")
    out(f"revoked {args.token_id} (the gateways refuse it from their next request)")
    return OK
