"""Fault injection for the whole pipeline: `python -m tests.chaos` (see docs/reliability.md)."""
