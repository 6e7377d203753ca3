"""`opsmantik relay`: drain the outbox to Kafka until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse

import uvloop

from opsmantik import process
from opsmantik.config import Settings
from opsmantik.relay.relay import Relay


def main(settings: Settings, args: argparse.Namespace) -> int:
    process.start("relay", settings, settings.relay_metrics_port)
    # uvloop: cheaper wake-ups (the poll thread's hand-over) and socket I/O than the default loop.
    return uvloop.run(process.run_until_stopped(settings, Relay))
