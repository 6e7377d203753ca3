"""Helpers for the CLI tests: the parser's commands, valid sample arguments derived from their
types, and `main()` run in-process with its output captured."""

from __future__ import annotations

import argparse
import contextlib
import io

from opsmantik import cli
from opsmantik.cli import args as cli_args
from opsmantik.cli.args import Arg

PARSER = cli.build_parser()
COMMANDS = [path for path, _ in cli_args.leaves(PARSER)]


def parser_of(path: tuple[str, ...]) -> argparse.ArgumentParser:
    return dict(cli_args.leaves(PARSER))[path]


def own_actions(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


def sample(action: argparse.Action) -> list[str]:
    """A valid value for an argument, as it is written on the command line."""
    if action.choices:
        value = next(iter(action.choices))
    elif isinstance(action.type, Arg):
        value = action.type.sample
    else:
        value = "x"
    return [value] if not action.option_strings else [action.option_strings[0], value]


def required_args(p: argparse.ArgumentParser, *, but: argparse.Action | None = None) -> list[str]:
    out: list[str] = []
    for a in own_actions(p):
        if a is not but and (a.required or not a.option_strings) and a.nargs != 0:
            out += sample(a)
    return out


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()
