"""`opsmantik`, the one command-line entry point (services/opsmantik/cli/main.py)."""

from opsmantik.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
