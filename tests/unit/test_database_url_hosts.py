"""OPSMANTIK_DATABASE_URL may name a primary and its standby (`stack up --standby`, issue 29):
the check accepts a multi-host URL, names each bad host, and every host is read for the
"cannot reach Postgres" messages (urlsplit's .port raises on a multi-host URL)."""

from __future__ import annotations

import pytest
from opsmantik.config import database_hosts, database_url

PAIR = "postgresql://opsmantik@127.0.0.1:15432,127.0.0.1:15433/opsmantik?target_session_attrs=read-write"


def test_a_multi_host_url_is_valid_and_lists_every_host() -> None:
    assert database_url(PAIR) is None
    assert database_hosts(PAIR) == [("127.0.0.1", 15432), ("127.0.0.1", 15433)]


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("postgresql://u:secret@db/x", [("db", 5432)]),
        ("postgres://db:6000/x", [("db", 6000)]),
        ("postgresql://u@[::1]:5,db2/x", [("::1", 5), ("db2", 5432)]),
    ],
)
def test_single_and_ipv6_hosts(url: str, hosts: list[tuple[str, int]]) -> None:
    assert database_url(url) is None and database_hosts(url) == hosts


def test_a_bad_port_is_named() -> None:
    assert database_url("postgresql://u@db:5432,db2:x/x") == "'db2:x' is not host[:port]"
    assert "got scheme 'mysql'" in (database_url("mysql://db/x") or "")
