"""The CLI's error half: every exception a command can end with → (exit code, one line).

Domain code raises from the one hierarchy in services/opsmantik/errors.py; EXIT_CODES below is
the one place its classes become exit codes (docs/cli.md "Errors and exit codes" is the table).
Anything else (asyncpg, Kafka, OSError) is classified here too, so a command needs no try/except
of its own. `opsmantik` never shows a traceback (`opsmantik --debug CMD` does, for a bug report). An engine
that cannot be reached is named with its address and the command that starts it; which engine it
is, is found by probing both (a refused connection rarely says whose port it was).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

import asyncpg
from confluent_kafka import KafkaException

from opsmantik.cli.args import CANNOT_RUN, CHECK_FAILED, START_ENGINES, USAGE
from opsmantik.config import Settings, SettingsError, database_hosts
from opsmantik.errors import CheckFailed, OpsmantikError, Refused, Unavailable, UsageError
from opsmantik.months import MonthError

# The hierarchy → exit codes (services/opsmantik/errors.py). First match wins; the three bases are
# disjoint, so the order only matters for a subclass of two, which there is none of.
EXIT_CODES: tuple[tuple[type[OpsmantikError], int], ...] = (
    (UsageError, USAGE),
    (CheckFailed, CHECK_FAILED),
    (Unavailable, CANNOT_RUN),
)


def exit_code_of(cls: type[OpsmantikError]) -> int:
    for base, code in EXIT_CODES:
        if issubclass(cls, base):
            return code
    return CANNOT_RUN  # OpsmantikError itself is never raised: a bug, like any unexpected error


# Modules that define a domain error (docs/cli.md lists them; tests/unit/test_cli_error_map.py checks
# that every error class in services/opsmantik/ is one of these modules' and in the hierarchy).
DOMAIN_ERROR_MODULES = (
    "opsmantik.config",
    "opsmantik.months",
    "opsmantik.sites",
    "opsmantik.db.migrate",
    "opsmantik.kafka.topics",
    "opsmantik.devstack.stack",
    "opsmantik.billing.close",
    "opsmantik.billing.archive",
    "opsmantik.billing.archive_files",
    "opsmantik.billing.voids",
    "opsmantik.sla.maintenance",
    "opsmantik.audit.main",
    "opsmantik.audit.reader",
    "opsmantik.gateway.auth",
    "opsmantik.gateway.publisher",
    "opsmantik.worker.billable",
    "opsmantik.worker.processor",
    "opsmantik.meters.definitions",
    "opsmantik.meters.jsonpath",
    "opsmantik.meters.query",
    "opsmantik.portal",
    "opsmantik.alerts.urls",
)


def hierarchy() -> list[type[OpsmantikError]]:
    """The classes of services/opsmantik/errors.py in their order there (parents first)."""
    from opsmantik import errors

    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, OpsmantikError)]


def domain_errors() -> list[type[OpsmantikError]]:
    """The errors DOMAIN_ERROR_MODULES define (imported: each is a subclass in the hierarchy)."""
    import importlib

    found = []
    for name in DOMAIN_ERROR_MODULES:
        module = importlib.import_module(name)
        found += [
            c
            for c in vars(module).values()
            if isinstance(c, type) and issubclass(c, OpsmantikError) and c.__module__ == name
        ]
    return found


def nearest_base(cls: type[OpsmantikError]) -> type[OpsmantikError]:
    """The most specific class of errors.py that `cls` subclasses."""
    base = hierarchy()
    return next(b for b in cls.__mro__ if b in base)


@dataclass(frozen=True)
class Engine:
    name: str
    host: str
    port: int

    def reachable(self, timeout_s: float = 1.0) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout_s):
                return True
        except OSError:
            return False

    def __str__(self) -> str:
        return f"{self.name} at {self.host}:{self.port}"


def postgres(settings: Settings) -> list[Engine]:
    """Every host of the URL (a primary and its standby: one reachable is enough)."""
    return [Engine("Postgres", h, p) for h, p in database_hosts(settings.database_url)]


def kafka(settings: Settings) -> list[Engine]:
    found = []
    for part in settings.kafka_bootstrap.split(","):
        host, _, port = part.strip().rpartition(":")
        found.append(Engine("Kafka", host.strip("[]"), int(port)))
    return found


def unreachable(engines: list[Engine]) -> Unavailable:
    return Unavailable(
        f"{' and '.join(map(str, engines))} not reachable; start the local stack with "
        f"`{START_ENGINES}` (or set OPSMANTIK_DATABASE_URL / OPSMANTIK_KAFKA_BOOTSTRAP)"
    )


def require_kafka(settings: Settings) -> None:
    """Fail in a second, not after librdkafka's 30 s of retries, when no broker answers."""
    brokers = kafka(settings)
    if not any(b.reachable() for b in brokers):
        raise unreachable(brokers[:1])


def _engines_down(settings: Settings) -> list[Engine]:
    databases = postgres(settings)
    down = [] if any(d.reachable() for d in databases) else databases[:1]
    brokers = kafka(settings)
    if not any(b.reachable() for b in brokers):
        down.append(brokers[0])
    return down


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


_LISTEN_ERRNOS = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}
_CONNECT_ERRORS = (
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    KafkaException,
)


def _line(exc: OpsmantikError) -> str:
    """The one line for an error of the hierarchy: its message, with what it is about when the
    message alone would not say (kept word for word from when each command printed its own)."""
    from opsmantik.devstack.stack import StackError

    if isinstance(exc, SettingsError):
        return "; ".join(exc.problems)
    if isinstance(exc, MonthError):
        return f"--month: {exc}"
    if isinstance(exc, StackError):
        return f"stack: {_first_line(exc)}"
    if isinstance(exc, Refused):
        return f"refused: {_first_line(exc)}"
    return _first_line(exc)


def classify(exc: BaseException, settings: Settings | None) -> tuple[int, str]:
    """The exit code and one line for an exception that ended a command."""
    if isinstance(exc, OpsmantikError):
        return exit_code_of(type(exc)), _line(exc)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return CANNOT_RUN, f"{_first_line(exc)}; `{START_ENGINES}` creates the local one"
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedColumnError):
        return CANNOT_RUN, f"{_first_line(exc)}: the database is not migrated; run `opsmantik migrate`"
    if isinstance(exc, OSError) and exc.errno in _LISTEN_ERRNOS:
        return CANNOT_RUN, f"cannot listen: {exc.strerror or _first_line(exc)}"
    if isinstance(exc, (*_CONNECT_ERRORS, OSError)):
        down = _engines_down(settings) if settings is not None else []
        if down:
            return CANNOT_RUN, str(unreachable(down))
        if isinstance(exc, socket.gaierror):
            return CANNOT_RUN, f"host name not found: {exc.strerror or _first_line(exc)}"
        return CANNOT_RUN, f"{type(exc).__name__}: {_first_line(exc)}"
    if isinstance(exc, asyncpg.PostgresError):
        return CANNOT_RUN, f"Postgres refused: {_first_line(exc)}"
    return CANNOT_RUN, (
        f"unexpected {type(exc).__name__}: {_first_line(exc)} (`opsmantik --debug ...` shows the traceback)"
    )
