"""services/opsmantik/cli/errors.classify: each kind of ending → its exit code and one line; the error
hierarchy (services/opsmantik/errors.py) → the exit codes docs/cli.md tabulates."""

from __future__ import annotations

import errno
import socket
import uuid

from opsmantik.cli.errors import EXIT_CODES, classify
from opsmantik.config import Settings, SettingsError
from opsmantik.db.migrate import MigrationError
from opsmantik.devstack.stack import StackError
from opsmantik.errors import (
    CheckFailed,
    NotFound,
    OpsmantikError,
    Refused,
    Unavailable,
    UnknownArgument,
    UsageError,
)
from opsmantik.sites import UnknownSite

# Nothing listens on port 1: both engines are "down" for the probes.
DOWN = Settings(database_url="postgresql://u@127.0.0.1:1/db", kafka_bootstrap="127.0.0.1:1")


def test_each_kind_of_ending() -> None:
    site = uuid.uuid4()
    cases = [
        (UsageError("bad"), 2),
        (CheckFailed("drift"), 1),
        (Unavailable("down"), 3),
        (SettingsError(["OPSMANTIK_X bad", "OPSMANTIK_Y bad"]), 2),
        (MigrationError("edited\nmore"), 1),
        (UnknownSite(site), 2),  # keys create: a site id that names nothing is a bad argument
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


def _every_subclass(cls: type[BaseException]) -> list[type[BaseException]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _every_subclass(sub))]


def test_the_hierarchy_maps_as_docs_cli_md_says() -> None:
    """One row per class of docs/cli.md's table: the class, its exit code, and the line shown."""
    cases = [
        (UsageError("bad"), 2, "bad"),
        (UnknownArgument("no site x"), 2, "no site x"),
        (Refused("2026-01 is not closed"), 2, "refused: 2026-01 is not closed"),
        (CheckFailed("drift\ndetail"), 1, "drift"),
        (NotFound("no active key k"), 1, "no active key k"),
        (Unavailable("Postgres down"), 3, "Postgres down"),
        (Unavailable("down"), 3, "down"),
    ]
    for exc, code, line in cases:
        assert classify(exc, DOWN) == (code, line), exc
    assert [(cls, code) for cls, code in EXIT_CODES] == [(UsageError, 2), (CheckFailed, 1), (Unavailable, 3)]


def test_every_domain_error_is_in_the_hierarchy_with_its_documented_code() -> None:
    """The domain errors that existed before the hierarchy keep the exit codes their commands
    documented, and keep their old base (ValueError, RuntimeError, LookupError) for old callers."""
    from opsmantik.audit.main import Unreachable
    from opsmantik.audit.reader import ReadError
    from opsmantik.billing.archive import ArchiveRefused
    from opsmantik.billing.archive_files import ArchiveTampered
    from opsmantik.billing.close import CloseLockBusy, CloseRefused
    from opsmantik.billing.voids import VoidRefused
    from opsmantik.kafka.topics import TopicError
    from opsmantik.months import MonthError
    from opsmantik.sla.maintenance import WindowRefused

    expected: dict[type[BaseException], int] = {
        SettingsError: 2,
        MonthError: 2,
        UnknownSite: 2,
        CloseRefused: 2,
        ArchiveRefused: 2,
        WindowRefused: 2,
        MigrationError: 1,
        TopicError: 1,
        ArchiveTampered: 1,
        VoidRefused: 1,
        StackError: 3,
        Unreachable: 3,
        ReadError: 3,
        CloseLockBusy: 3,
    }
    for cls, code in expected.items():
        assert issubclass(cls, OpsmantikError), cls
        err = (
            cls(["x"])
            if cls in (SettingsError, VoidRefused)
            else cls(uuid.uuid4())
            if cls is UnknownSite
            else cls("x")
        )
        assert classify(err, DOWN)[0] == code, cls
    assert issubclass(MonthError, ValueError) and issubclass(SettingsError, ValueError)
    assert issubclass(UnknownSite, LookupError) and issubclass(MigrationError, RuntimeError)
    assert issubclass(WindowRefused, ValueError) and issubclass(StackError, RuntimeError)
    # every class of the hierarchy, however deep, lands on one of the three documented codes
    for cls in _every_subclass(OpsmantikError)[1:]:
        assert any(issubclass(cls, base) for base, _ in EXIT_CODES), cls


EXCEPTION_BASES = {
    "Exception",
    "RuntimeError",
    "ValueError",
    "LookupError",
    "KeyError",
    "OSError",
    "TypeError",
}


def _error_classes_in_the_package() -> set[tuple[str, str]]:
    """(module, class) for every class in services/opsmantik/ that derives, by name, from a builtin
    exception or from a class of errors.py (read from the source: no module is imported)."""
    import ast
    from pathlib import Path

    from opsmantik.cli.errors import hierarchy

    package = Path(__file__).resolve().parents[2] / "services" / "opsmantik"
    names = EXCEPTION_BASES | {c.__name__ for c in hierarchy()}
    found = set()
    for path in package.rglob("*.py"):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}
                if bases & names:
                    found.add((module, node.name))
    return found


def test_every_error_class_of_the_package_is_in_the_hierarchy() -> None:
    """A new `class XError(Exception)` anywhere in services/opsmantik/ fails here until it subclasses
    a class of errors.py and its module is in DOMAIN_ERROR_MODULES (so docs/cli.md lists it)."""
    from opsmantik.cli.errors import domain_errors, hierarchy

    known = {(c.__module__, c.__name__) for c in [*domain_errors(), *hierarchy()]}
    assert _error_classes_in_the_package() - known == set()
    assert len(known) >= 20  # the 26 of issue 30, less the four CLI-only classes errors.py replaced
