"""Who is calling a read route: a site (its key) or the operator (an operator token).

The one function other routes call:

    caller = await resolve(request)
    if isinstance(caller, web.Response):
        return caller                 # 401 / 429 / 503, already paced like the ingest routes'
    if isinstance(caller, Operator):  # every site (opsmantik.tokens.Operator: token_id, name)
        ...
    else:                             # caller is a SiteAuth: caller.site_id, and nothing else
        ...

`resolve` reads `Authorization: Bearer <credential>`: an `omo_…` operator token is checked in
memory (its MAC tag, opsmantik.tokens) and then looked up in Postgres on every request, so a
revoked token is refused from the next request on (operator reads are rare; no cache to wait
for); anything else goes through the site-key path of the ingest routes
(routes_api.authenticate: the key cache, its budget and its pacing). `require_operator` is the
same, and answers a site key with 403: it is for operator-only routes.
"""

from __future__ import annotations

from aiohttp import web

from opsmantik.gateway.auth import SiteAuth, bearer
from opsmantik.gateway.routes_api import authenticate
from opsmantik.gateway.state import STATE, error, unavailable
from opsmantik.tokens import TOKEN_PREFIX, Operator, operator_by_token, tag_verifies

__all__ = ["Operator", "require_operator", "resolve"]
LOOKUP_TIMEOUT_S = 2.0


async def resolve(request: web.Request) -> SiteAuth | Operator | web.Response:
    """The caller: a SiteAuth (a site key), an Operator (an operator token), or the answer to give
    (401 missing/unknown/revoked, 429 key lookups exhausted, 503 Postgres unavailable)."""
    credential = bearer(request.headers.get("Authorization"))
    if credential is None or not credential.startswith(TOKEN_PREFIX):
        return await authenticate(request, request.app[STATE])
    state = request.app[STATE]
    if not tag_verifies(credential, state.keys.secrets):
        state.metrics.auth_refused("bad_operator_token")
        await state.keys.pacer.pause()
        return error(401, "unauthorized", "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
    try:
        async with state.pool.acquire(timeout=LOOKUP_TIMEOUT_S) as conn:
            operator = await operator_by_token(conn, credential, LOOKUP_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - Postgres down or slow: retry is safe
        return unavailable("verify the token")
    if operator is None:
        state.metrics.auth_refused("unknown_operator_token")
        await state.keys.pacer.pause()
        return error(401, "unauthorized", "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
    return operator


async def require_operator(request: web.Request) -> Operator | web.Response:
    """For operator-only routes: the Operator, or the answer (403 for a valid site key)."""
    caller = await resolve(request)
    if isinstance(caller, SiteAuth):
        return error(
            403, "forbidden", "this route needs an operator token; a site key reads its own site only"
        )
    return caller
