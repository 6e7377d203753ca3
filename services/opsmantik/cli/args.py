"""The CLI's parsing half: argument types that validate (so a bad value is a one-line usage error
with exit 2, never a database CHECK violation or a traceback), the parser class every command's
parser is made of, and the help epilogs (environment read, exit codes) added to every command.

Commands registered anywhere in services/opsmantik/cli/main.py inherit all of it: subparsers are made of the
parent's class, and `finish()` walks the finished tree.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import date
from typing import Any, NoReturn

from opsmantik import months
from opsmantik.config import Settings

# Exit codes (README "The CLI"): the same for every command.
OK, CHECK_FAILED, USAGE, CANNOT_RUN = 0, 1, 2, 3
EXIT_CODES = {
    OK: "ok",
    CHECK_FAILED: "the check found a problem (what that is: each command's help)",
    USAGE: "usage error: a bad argument or OPSMANTIK_* setting (one line on stderr)",
    CANNOT_RUN: "could not run: an engine is unreachable (the message names the command that "
    "starts it)\n     or the database is not migrated",
}
START_ENGINES = "opsmantik stack up"


# ---------------------------------------------------------------- validated types


@dataclass(frozen=True)
class Arg:
    """An argparse `type` that validates. `sample` is a valid value and `bad` are values it must
    refuse: tests/unit/test_cli_usage.py feeds them to every command that uses the type."""

    name: str
    parse: Callable[[str], Any]
    sample: str
    bad: tuple[str, ...]

    def __call__(self, raw: str) -> Any:
        try:
            return self.parse(raw)
        except (ValueError, OverflowError) as exc:
            raise argparse.ArgumentTypeError(f"{raw[:40]!r}: {exc}") from None


def _integer(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError(f"not an integer; expected one from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be from {lo} to {hi}")
        return value

    return parse


def integer(lo: int, hi: int, what: str = "") -> Arg:
    what = what or f"an integer from {lo} to {hi}"
    return Arg(what, _integer(lo, hi), str(lo), (str(lo - 1), str(hi + 1), "x", "1.5", ""))


def _rate(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("not a number; expected one > 0 and <= 1e9") from None
    if not (math.isfinite(value) and 0 < value <= 1e9):
        raise ValueError("must be a number > 0 and <= 1e9")
    return value


def _uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValueError("not a UUID (e.g. 0b7c3f4e-1d2a-4c5b-9e8f-001122334455)") from None


def _month(raw: str) -> date:
    try:
        return months.parse_month(raw)
    except months.MonthError:
        raise ValueError(months.EXPECTED) from None


def _name(raw: str) -> str:
    if not 1 <= len(raw) <= 200 or "\x00" in raw:
        raise ValueError("must be 1-200 characters without NUL")
    return raw


def _time(raw: str) -> str:
    from opsmantik.events import parse_time

    if parse_time(raw) is None:
        raise ValueError("expected an RFC 3339 time with an offset, e.g. 2026-12-01T02:00:00Z")
    return raw  # commands get the validated string


def _ttl(raw: str) -> Any:
    from opsmantik import portal

    try:
        return portal.parse_ttl(raw)
    except portal.BadTtl as exc:
        raise ValueError(str(exc)) from None


def _host(raw: str) -> str:
    if not raw or any(c.isspace() for c in raw) or len(raw) > 253:
        raise ValueError("must be a host name or IP address")
    return raw


INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
PORT = integer(1, 65535, "a TCP port from 1 to 65535")
PORT_OR_ZERO = integer(0, 65535, "a TCP port from 1 to 65535, or 0 for any free port")
UUID = Arg("a UUID", _uuid, "00000000-0000-4000-8000-000000000001", ("not-a-uuid", "1234", ""))
MONTH = Arg("a month YYYY-MM", _month, "2026-01", ("0000-01", "2026-13", "2026-1", "10000-01", ""))
NAME = Arg("a name", _name, "acme", ("", "x" * 201, "a\x00b"))
TIME = Arg("a time", _time, "2099-01-01T00:00:00Z", ("tomorrow", "2026-12-01T02:00:00", ""))
HOST = Arg("a host", _host, "127.0.0.1", ("", "a b"))
TTL = Arg("a duration", _ttl, "1h", ("0", "59s", "31d", "1x", ""))  # portal tokens: 1 min to 30 days
RATE = Arg("a rate", _rate, "1000", ("0", "-1", "nan", "inf", "1e10", "x"))
QUOTA = integer(0, INT64_MAX, "an integer from 0 to 2**63-1")  # 0: every event is overlimit
HARD_CAP = integer(1, INT64_MAX, "an integer from 1 to 2**63-1")  # 0 would refuse every request
BURST = integer(1, INT32_MAX, "an integer from 1 to 2**31-1")


# ---------------------------------------------------------------- the parser


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help with every default that is not already spelled out in the text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" not in text
            and default not in (None, False, argparse.SUPPRESS)
            and not isinstance(action, argparse._SubParsersAction)
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (what is wrong, and where to read more), exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message.splitlines()[0]} (see `{self.prog} --help`)\n")
        sys.exit(USAGE)


# ---------------------------------------------------------------- help epilogs


def env_var(name: str) -> str:
    return "OPSMANTIK_" + name.upper()


def _env_line(name: str) -> str:
    default = {f.name: f.default for f in fields(Settings)}[name]
    return f"  {env_var(name):31} default {default}"


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of a parser's direct subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                yield name, helps.get(name, ""), child


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(command path, parser) of every runnable command, in registration order."""
    children = list(subcommands(parser))
    if not children:
        yield path, parser
    for name, _help, child in children:
        yield from leaves(child, (*path, name))


def summary(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> str:
    """A command's one-line help, as registered with add_parser(help=...)."""
    node, text = parser, ""
    for part in path:
        text, node = next((h, c) for n, h, c in subcommands(node) if n == part)
    return text


def finish(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add to every command's help the settings it reads and what its exit codes mean.

    A command says which settings matter with set_defaults(env=("database_url", ...)) (Settings
    field names) and what exit 1 means with set_defaults(exit1="..."); without them the help says
    every OPSMANTIK_* setting is read, which is true of every command (they are validated at start).
    """
    for path, leaf in leaves(parser):
        leaf.description = leaf.description or textwrap.fill(summary(parser, path), 80)
        env = leaf.get_default("env")
        exit1 = leaf.get_default("exit1")
        lines = ["environment (invalid values are a usage error, exit 2):"]
        if env:
            lines += [_env_line(n) for n in env]
            lines.append("  and the other OPSMANTIK_* settings of services/opsmantik/config.py")
        else:
            lines.append("  the OPSMANTIK_* settings of services/opsmantik/config.py")
        lines.append("exit codes:")
        for code, meaning in EXIT_CODES.items():
            if code == CHECK_FAILED:
                meaning = exit1 or "not used by this command"
            lines.append(f"  {code}  {meaning}")
        leaf.epilog = "\n".join(lines)
    return parser
