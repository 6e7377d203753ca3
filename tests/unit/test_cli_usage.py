"""Every registered command, with bad input: one line on stderr, exit 2, no traceback. The command
list and the bad values come from the parser itself (services/opsmantik/cli/main.py), so a command added
later is
covered without touching this file. No engine is needed: usage errors stop before any connection."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opsmantik import cli
from opsmantik.cli import args as cli_args
from opsmantik.cli.args import USAGE, Arg

from tests.support.cli import COMMANDS, PARSER, own_actions, parser_of, required_args, run_main


def _refuse(*_args: object) -> int:
    raise AssertionError("a command ran: its bad input was accepted")


# The commands main() parses with: the same tree, but nothing runs if a bad value slips through
# (it could be `stack down`).
GUARDED = cli.build_parser()
for _path, _leaf in cli_args.leaves(GUARDED):
    _leaf.set_defaults(func=_refuse)


@pytest.fixture(autouse=True)
def guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: GUARDED)


def bad_inputs() -> list[tuple[tuple[str, ...], list[str]]]:
    cases: list[tuple[tuple[str, ...], list[str]]] = []
    for path in COMMANDS:
        p = parser_of(path)
        cases.append((path, [*path, *required_args(p), "--no-such-flag"]))
        if required_args(p):
            cases.append((path, list(path)))  # a required argument missing
        for a in own_actions(p):
            bad: tuple[str, ...] = a.type.bad if isinstance(a.type, Arg) else ()
            if a.choices:
                bad += ("no-such-choice",)
            for value in bad:
                given = [value] if not a.option_strings else [a.option_strings[0], value]
                cases.append((path, [*path, *required_args(p, but=a), *given]))
    return cases


def test_every_command_is_found() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"stack", "migrate", "sites create", "keys revoke", "gateway", "run", "reconcile"} <= names
    assert len(bad_inputs()) > 3 * len(COMMANDS)


@pytest.mark.parametrize(
    ("path", "argv"), bad_inputs(), ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_input_is_one_line_and_exit_2(path: tuple[str, ...], argv: list[str]) -> None:
    code, out, err = run_main(argv)
    assert code == USAGE, (argv, code, out, err)
    assert out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("opsmantik"), err
    assert "--help" in err  # where to read more


def test_every_typed_argument_validates() -> None:
    """`type=int` would accept --rate 0 or --port 70000: typed arguments use cli_args' types."""
    loose = [
        (" ".join(path), a.dest)
        for path in COMMANDS
        for a in own_actions(parser_of(path))
        if a.type is not None and not isinstance(a.type, Arg)
    ]
    assert loose == [], "use a validating type from services/opsmantik/cli/args.py for these"


def test_help_for_every_command_and_flag() -> None:
    for path in COMMANDS:
        p = parser_of(path)
        assert p.description, f"`opsmantik {' '.join(path)}` has no help: add_parser(..., help=...)"
        for a in own_actions(p):
            assert a.help, f"`opsmantik {' '.join(path)}` {a.dest}: no help text"
        text = p.format_help()
        assert "environment" in text and "exit codes:" in text and "OPSMANTIK_" in text
    assert "--debug" in PARSER.format_help()


def test_help_names_defaults_and_environment() -> None:
    gateway = parser_of(("gateway",)).format_help()
    assert "OPSMANTIK_GATEWAY_PORT" in gateway and "8080" in gateway and "127.0.0.1" in gateway
    run = parser_of(("run",)).format_help()
    assert "--port" in run and "8080" in run
    create = parser_of(("sites", "create")).format_help()
    assert "(default: 1000.0)" in create and "(default: 2000)" in create
    assert "drift" in parser_of(("reconcile",)).format_help()
    assert "--json" in parser_of(("stack",)).format_help()


def test_real_entry_point_shows_no_traceback() -> None:
    """The issue's cases through `python -m opsmantik.cli`, as a user runs them."""
    env = {**os.environ, "OPSMANTIK_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    for argv in (
        ["gateway", "--port", "70000"],
        ["sites", "create", "x", "--rate", "0"],
        ["sites", "create", "x", "--monthly-quota", "-1"],
        ["sites", "create", "x", "--hard-cap", "0"],
        ["slo-report", "--month", "2026-13"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "opsmantik.cli", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert proc.returncode == USAGE, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
