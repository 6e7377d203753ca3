"""The worker's and the relay's small HTTP endpoint: /metrics (Prometheus) and /healthz.

Port 0 binds an ephemeral port, so any number of workers and relays run on one host; the
bound port is logged at start and reported on /healthz (a supervisor or a Prometheus file-SD
writer reads it from there). -1 turns the endpoint off.
"""

from __future__ import annotations

import logging
import os
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger("opsmantik.metrics")


def bound_address(server: socketserver.BaseServer) -> tuple[str, int]:
    """The (host, port) an IPv4/IPv6 TCP server is bound to (port 0 = the kernel's choice)."""
    address = server.server_address
    assert isinstance(address, tuple)
    return str(address[0]), int(address[1])


@dataclass
class MetricsEndpoint:
    service: str
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        return bound_address(self.server)[0]

    @property
    def port(self) -> int:
        return bound_address(self.server)[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(service: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                host, port = bound_address(self.server)
                body = {
                    "status": "ok",
                    "service": service,
                    "pid": os.getpid(),
                    "metrics_host": host,
                    "metrics_port": port,
                }
                self._send(200, orjson.dumps(body), "application/json")
            else:
                self._send(404, b'{"error": "not_found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - scrapes are not news
            return

    return Handler


def serve(service: str, host: str, port: int) -> MetricsEndpoint | None:
    """Start the endpoint in a daemon thread; None when port is -1 (off)."""
    if port < 0:
        return None
    server = ThreadingHTTPServer((host, port), _handler(service))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"{service}-metrics", daemon=True)
    thread.start()
    endpoint = MetricsEndpoint(service, server, thread)
    log.info("%s metrics on http://%s:%d/metrics (health: /healthz)", service, endpoint.host, endpoint.port)
    return endpoint
