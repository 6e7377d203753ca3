"""services/opsmantik/cli_errors.classify: each kind of ending → its exit code and one line."""

from __future__ import annotations

import errno
import socket
import uuid

from opsmantik.cli.errors import CannotRun, CheckFailed, UsageError, classify
from opsmantik.config import Settings, SettingsError
from opsmantik.db.migrate import MigrationError
from opsmantik.devstack.stack import StackError
from opsmantik.sites import UnknownSite

# Nothing listens on port 1: both engines are "down" for the probes.
DOWN = Settings(database_url="postgresql://u@127.0.0.1:1/db", kafka_bootstrap="127.0.0.1:1")


def test_each_kind_of_ending() -> None:
    site = uuid.uuid4()
    cases = [
        (UsageError("bad"), 2),
        (CheckFailed("drift"), 1),
        (CannotRun("down"), 3),
        (SettingsError(["OPSMANTIK_X bad", "OPSMANTIK_Y bad"]), 2),
        (MigrationError("edited\nmore"), 1),
        (UnknownSite(site), 1),
        (StackError("jars missing\nlog tail"), 3),
        (OSError(errno.EADDRINUSE, "Address already in use"), 3),
        (KeyError("bug"), 3),
        (RuntimeError("bug\nsecond line"), 3),
    ]
    for exc, code in cases:
        got, line = classify(exc, DOWN)
        assert got == code, (exc, got, line)
        assert "\n" not in line and line, (exc, line)
    assert classify(UnknownSite(site), DOWN)[1] == f"no site {site}"
    assert "cannot listen" in classify(OSError(errno.EADDRINUSE, "in use"), DOWN)[1]
    assert "--debug" in classify(KeyError("bug"), DOWN)[1]  # a bug is not "not found"


def test_a_refused_connection_names_the_engines_and_the_fix() -> None:
    code, line = classify(ConnectionRefusedError(111, "refused"), DOWN)
    assert code == 3
    assert "Postgres at 127.0.0.1:1 and Kafka at 127.0.0.1:1 not reachable" in line
    assert "`opsmantik stack up`" in line


def test_an_unknown_host_that_is_no_engine() -> None:
    up = Settings()  # the probes may or may not find the local stack; the line is one line either way
    code, line = classify(socket.gaierror(-2, "Name or service not known"), up)
    assert code == 3 and "\n" not in line
