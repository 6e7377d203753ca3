"""schemas/openapi.yaml documents every route the gateway serves, and nothing else."""

import re
from pathlib import Path

from opsmantik.config import Settings
from opsmantik.gateway.app import create_app

OPENAPI = Path(__file__).resolve().parents[2] / "schemas/openapi.yaml"


def documented() -> set[tuple[str, str]]:
    pairs, path = set(), None
    for line in OPENAPI.read_text().splitlines():
        if m := re.fullmatch(r"  (/\S*):", line):
            path = m[1]
        elif path and (m := re.fullmatch(r"    (get|post|put|patch|delete):.*", line)):
            pairs.add((m[1].upper(), path))
        elif line and not line.startswith(" "):
            path = None
    return pairs


def test_every_route_is_documented_and_every_documented_route_exists():
    app = create_app(Settings())  # no engines touched: connections open on startup only
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    assert documented() == served
