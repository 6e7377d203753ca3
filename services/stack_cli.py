"""`opsmantik stack up|down|status|env [--brokers N] [--json]`: the command's logic.

`up --brokers 3` starts a 3-broker KRaft cluster instead of the single broker (the default);
the size is recorded under .local/kafka/brokers so `status`, `env` and `down` act on the same
cluster without repeating the flag.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from services import stack
from services.config import Settings


def main(settings: Settings, args: argparse.Namespace) -> int:
    brokers = getattr(args, "brokers", None)
    if brokers is not None and brokers < 1:
        print("stack: --brokers must be >= 1")
        return 2
    local = stack.Stack.local(brokers if args.action == "up" else None)
    if args.action == "up":
        recorded = stack.recorded_brokers(local.home)
        if brokers and brokers != recorded and stack.Stack.local(recorded).kafka_status().running:
            print(f"stack: a {recorded}-broker Kafka is running; `opsmantik stack down` first")
            return 2
        started = local.up()
        print("started: " + ", ".join(started) if started else "already running: kafka, postgres")
        if local.brokers > 1:
            print(f"kafka cluster of {local.brokers}: {local.kafka_bootstrap}")
    elif args.action == "down":
        stopped = local.down()
        print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    elif args.action == "status":
        engines = local.status()
        if args.json:
            print(json.dumps([asdict(e) for e in engines]))
        else:
            print(f"{'engine':9} {'state':8} {'version':9} {'port':6} {'pid':8} {'role':30} data")
            for e in engines:
                state = "running" if e.running else "stopped"
                print(f"{e.name:9} {state:8} {e.version:9} {e.port:<6} {e.pid or '-':<8} "
                      f"{e.role or '-':30} {e.data_dir}")
        return 0 if all(e.running for e in engines) else 3
    elif args.action == "env":
        # Replication follows the cluster's size (services/kafka.py): nothing to export for it.
        print(f"export OPSMANTIK_DATABASE_URL={local.database_url}")
        print(f"export OPSMANTIK_KAFKA_BOOTSTRAP={local.kafka_bootstrap}")
    return 0
