"""`opsmantik stack up|down|status|env [--brokers N] [--json]`: the command's logic.

`up --brokers 3` starts a 3-broker KRaft cluster instead of the single broker (the default);
the size is recorded under .local/kafka/brokers so `status`, `env`, `down` and `run` act on the
same cluster without repeating the flag (docs/scaling.md). `up --standby` adds a synchronous
streaming standby of Postgres (port 15433); once made, `status`, `env` and `down` include it
(docs/reliability.md "When the database is lost").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import asdict
from typing import Any

from opsmantik.cli.args import CANNOT_RUN, START_ENGINES, USAGE
from opsmantik.config import Settings
from opsmantik.devstack import stack


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, default=str, indent=None))


def main(settings: Settings, args: argparse.Namespace) -> int:
    brokers = getattr(args, "brokers", None)
    standby = bool(getattr(args, "standby", False)) and args.action == "up"
    local = dataclasses.replace(
        stack.Stack.local(brokers if args.action == "up" else None, standby), kafka_heap=settings.kafka_heap
    )
    if args.action == "up":
        recorded = stack.recorded_brokers(stack.LOCAL) if brokers else local.brokers
        if brokers and brokers != recorded and stack.Stack.local(recorded).kafka_status().running:
            print(
                f"opsmantik stack up: a {recorded}-broker Kafka is running; stop it first with "
                "`opsmantik stack down`",
                file=sys.stderr,
            )
            return USAGE
        started = local.up()
        if args.json:
            _print_json(
                {"started": started, "brokers": local.brokers, "engines": [asdict(e) for e in local.status()]}
            )
        else:
            names = ", ".join(e.name for e in local.status())
            print("started: " + ", ".join(started) if started else f"already running: {names}")
            if local.brokers > 1:
                print(f"kafka cluster of {local.brokers}: {local.kafka_bootstrap}")
            if local.standby_port:
                print(f"postgres standby (synchronous) on {local.standby_port}: {local.database_url}")
    elif args.action == "down":
        stopped = local.down()
        if args.json:
            _print_json({"stopped": stopped})
        else:
            print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    elif args.action == "status":
        engines = local.status()
        if args.json:
            _print_json([asdict(e) for e in engines])
        else:
            print(f"{'engine':9} {'state':8} {'version':9} {'port':6} {'pid':8} {'role':30} data")
            for e in engines:
                state = "running" if e.running else "stopped"
                print(
                    f"{e.name:9} {state:8} {e.version:9} {e.port:<6} {e.pid or '-':<8} "
                    f"{e.role or '-':30} {e.data_dir}"
                )
        if not all(e.running for e in engines):
            print(f"opsmantik stack status: not running; start it with `{START_ENGINES}`", file=sys.stderr)
            return CANNOT_RUN
    elif args.action == "env":
        # Replication follows the cluster's size (services/opsmantik/kafka/topics.py): nothing to export
        # for it.
        exports = {
            "OPSMANTIK_DATABASE_URL": local.database_url,
            "OPSMANTIK_KAFKA_BOOTSTRAP": local.kafka_bootstrap,
        }
        if args.json:
            _print_json(exports)
        else:
            for name, value in exports.items():
                print(f"export {name}={value}")
    return 0
