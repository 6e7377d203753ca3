"""gateway/state.py `JsonAnswer` (issue 28: the ingest routes' 200 in one coroutine each for
aiohttp's `_start` and `write_eof`) writes exactly the bytes aiohttp's web.Response writes: the
same answer served both ways on a real aiohttp server (the pinned version) and read raw off the
socket, for HTTP/1.1 and 1.0, keep-alive and close, two answers on one connection, an empty
body, and the cases it leaves to aiohttp (HEAD; a Content-Length already set)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiohttp import web
from opsmantik.gateway.state import JsonAnswer, json_answer, json_response

HEADERS = {"RateLimit-Limit": "100", "RateLimit-Remaining": "99", "RateLimit-Reset": "1"}
BODY = {"results": [{"event_id": "e-1", "status": "accepted", "receipt": {"partition": 3, "offset": 41}}]}
Make = Callable[[int, object, dict[str, str] | None], web.Response]


def handler(make: Make, status: int = 200, body: object = BODY, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return make(status, body, dict(headers) if headers is not None else dict(HEADERS))

    return handle


async def empty_answer(request: web.Request) -> web.Response:
    return JsonAnswer(status=200, body=b"", content_type="application/json")


async def empty_plain(request: web.Request) -> web.Response:
    return web.Response(status=200, body=b"", content_type="application/json")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()
    for name, make in (("plain", json_response), ("fast", json_answer)):
        app.router.add_post(f"/{name}", handler(make))
        app.router.add_get(f"/{name}", handler(make))  # and HEAD
        app.router.add_post(f"/{name}/400", handler(make, 400, {"error": "x"}, {}))
        app.router.add_post(
            f"/{name}/length",
            handler(make, headers={**HEADERS, "Content-Length": str(len(orjson.dumps(BODY)))}),
        )
    app.router.add_post("/plain/empty", empty_plain)
    app.router.add_post("/fast/empty", empty_answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    yield sockets[0].getsockname()[1]
    await runner.cleanup()


async def exchange(port: int, requests: list[bytes]) -> bytes:
    """Send each request on one connection, reading its whole answer before the next; then read
    to the close (or a short quiet spell, when the server keeps the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = b""
    for raw in requests:
        writer.write(raw)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        m = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
        length = int(m.group(1)) if m and not raw.startswith(b"HEAD") else 0
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        out += head + body
    try:
        out += await asyncio.wait_for(reader.read(), 0.3)  # b"" at the server's close
        out += b"<closed>"
    except TimeoutError:
        out += b"<open>"
    writer.close()
    return re.sub(rb"(?i)\r\ndate: [^\r]*", b"\r\nDate: <date>", out)


def request(method: str, path: str, version: str = "1.1", extra: str = "") -> bytes:
    body = b'{"event_id":"e-1"}' if method == "POST" else b""
    head = f"{method} {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@pytest.mark.parametrize(
    "case",
    [
        [("POST", "", "1.1", "")],
        [("POST", "", "1.1", ""), ("POST", "", "1.1", "")],  # two answers, one connection
        [("POST", "", "1.1", "Connection: close\r\n")],
        [("POST", "", "1.0", "")],
        [("POST", "", "1.0", "Connection: keep-alive\r\n"), ("POST", "", "1.0", "")],
        [("POST", "/400", "1.1", "")],
        [("POST", "/empty", "1.1", "")],
        [("POST", "/length", "1.1", "")],  # a Content-Length already set: aiohttp's path
        [("HEAD", "", "1.1", "")],  # no body: aiohttp's path
        [("GET", "", "1.1", "Connection: close\r\n")],
    ],
)
async def test_the_same_bytes_as_web_response(port: int, case: list[tuple[str, str, str, str]]) -> None:
    plain = await exchange(port, [request(m, "/plain" + p, v, x) for m, p, v, x in case])
    fast = await exchange(port, [request(m, "/fast" + p, v, x) for m, p, v, x in case])
    assert fast == plain
    assert plain.startswith(b"HTTP/1.")


@pytest.mark.parametrize("status", [200, 400, 429, 503])
@pytest.mark.parametrize("headers", [None, {}, HEADERS, {**HEADERS, "Retry-After": "1"}])
def test_json_answer_is_what_init_makes(status: int, headers: dict[str, str] | None) -> None:
    """json_answer sets what web.Response's __init__ sets for these arguments, attribute for
    attribute, headers in the same order."""
    made = json_answer(status, BODY, headers)
    init = JsonAnswer(
        status=status, body=orjson.dumps(BODY), content_type="application/json", headers=headers
    )
    assert vars(made) == vars(init)
    assert list(made.headers.items()) == list(init.headers.items())
    assert (made.status, made.reason, made.body, made.keep_alive) == (
        init.status,
        init.reason,
        init.body,
        None,
    )
