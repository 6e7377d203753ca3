"""Scale-out rows of `make bench` (docs/scaling.md): a 3-broker KRaft cluster (acks=all, RF 3,
min ISR 2) beside the single-broker rows, and 2 gateway processes on one port.

Runs after the single-broker scenarios (their rows are the baselines): a private 3-broker
cluster (tests/support/stacks.py: free ports, a fresh directory), stopped and removed at the
end; Postgres is the bench's own.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from tests.bench.env import OPSMANTIK, BenchError, SiteKey, wait_port
from tests.bench.procs import CpuMeter, run_child
from tests.bench.stats import Row, ratio
from tests.support.process import stable_ports
from tests.support.stacks import new_stack, remove

if TYPE_CHECKING:
    from tests.bench.runner import Bench

TWO_GATEWAYS_PORT, CLUSTER_GATEWAY_PORT = stable_ports(2)


def run(bench: Bench, single: SiteKey, batch: SiteKey) -> None:
    """The rows; a failure fails the scenario (the bench goes on to the next). The smoke form
    (`--smoke`) runs the two gateways only: three more broker JVMs would take most of its minute
    (the 3-broker path is `make cluster`'s, tests/cluster)."""
    two_gateways(bench, single, batch)
    if bench.plan.smoke:
        bench.say("  smoke: the 3-broker cluster is skipped (make bench QUICK=1 / make cluster run it)")
        return
    three_brokers(bench, batch)


def two_gateways(bench: Bench, single: SiteKey, batch: SiteKey) -> None:
    bench.say("scenario: 2 gateway processes on one port (SO_REUSEPORT), single broker")
    topic = bench.env.topic("a")
    gw = bench.env.start(
        "gateway-x2",
        [*OPSMANTIK, "gateway", "--host", "127.0.0.1", "--port", str(TWO_GATEWAYS_PORT), "--workers", "2"],
        topic,
    )
    try:
        wait_port(TWO_GATEWAYS_PORT, gw)
        bench._load(TWO_GATEWAYS_PORT, single.api_key, 0, "gw2-warm", bench.plan.warmup, [])
        runs = (
            ("2 gateways: 1 event/request", "1 event/request", single, 0),
            ("2 gateways: 100-event batches", "100-event batches", batch, 100),
        )
        for name, base_name, key, size in runs:
            base = bench.row(base_name)
            ours, engines = CpuMeter([gw.pid]), CpuMeter(bench.env.engine_pids())
            r = bench._load(
                TWO_GATEWAYS_PORT, key.api_key, size, f"gw2-{size}", bench.plan.seconds, [ours, engines]
            )
            value = r.requests_per_s if size == 0 else r.events_per_s
            base_value = None if base is None else (base.requests_per_s if size == 0 else base.events_per_s)
            row = bench._http_row(name, "scenario", r, ours, engines, base_name, base_value, value)
            row.notes.append(
                "two gateway processes (opsmantik gateway --workers 2); the load generator "
                "shares the machine's 2 cores with them and with the engines"
            )
    finally:
        gw.stop()


def three_brokers(bench: Bench, batch: SiteKey) -> None:
    bench.say("scenario: 3-broker cluster (acks=all, RF 3, min ISR 2)")
    # its Kafka only: Postgres is the bench's
    cluster = new_stack("bench-cluster", brokers=3, quick_start=False)
    try:
        cluster.kafka_up()
        topic = bench.env.topic("c")
        env = {"OPSMANTIK_KAFKA_BOOTSTRAP": cluster.kafka_bootstrap}
        # `migrate` against the cluster: the topics get RF 3 and min ISR 2 from its size.
        done = run_child([*OPSMANTIK, "migrate"], bench.env.env(topic, **env), 120)
        if done.returncode != 0:
            raise BenchError(f"migrate on the cluster failed:\n{done.stderr}")
        # The raw producer to an RF 3 / min ISR 2 topic (auto-created with the brokers' defaults).
        engines = CpuMeter(cluster.kafka_pids()).start()
        data, cpu = bench._run_json(
            [
                sys.executable,
                "-m",
                "tests.bench.raw_producer",
                "--bootstrap",
                cluster.kafka_bootstrap,
                "--topic",
                bench.env.topic("rawc"),
                "--seconds",
                str(bench.plan.seconds),
            ],
            timeout_s=bench.plan.seconds + 120,
        )
        engines.stop()
        events = max(1, int(data["events"]))  # type: ignore[call-overload]
        base = bench.row("raw producer acks=all")
        row = Row(
            "3 brokers: raw producer acks=all RF 3",
            "scenario",
            events_per_s=events / float(data["seconds"]),  # type: ignore[arg-type]
            p50_ms=data["p50_ms"],
            p95_ms=data["p95_ms"],
            p99_ms=data["p99_ms"],  # type: ignore[arg-type]
            cpu_us_per_event=cpu / events * 1e6,
            engine_cpu_us_per_event=engines.used / events * 1e6,
            baseline="raw producer acks=all",
        )
        row.ratio = ratio(row.events_per_s, base.events_per_s if base else None)
        row.notes.append(
            "three brokers on one 2-core host: every record is written three times "
            "(leader + 2 followers) before the ack"
        )
        bench.rows.append(row)
        bench.say(f"  {row.events_per_s:,.0f} ev/s")

        # The gateway in 100-event batches, against the bench's single broker first (the baseline,
        # same settings, same run), then against the cluster.
        single = gateway_batches(
            bench,
            "1 broker: 100-event batches, deadline 1 s",
            "baseline",
            batch,
            bench.env.topic("a"),
            {},
            bench.env.engine_pids(),
            None,
        )
        engines = [*cluster.kafka_pids(), bench.env.stack.pg_pid() or 0]
        gateway_batches(
            bench,
            "3 brokers: 100-event batches, deadline 1 s",
            "scenario",
            batch,
            topic,
            env,
            engines,
            single,
        )
        # The same with a key per event: a request's 100 events go to every partition, so every
        # broker must ack it (the default key keeps a request on one partition; docs/scaling.md).
        gateway_batches(
            bench,
            "3 brokers: 100-event batches, key per event",
            "scenario",
            batch,
            topic,
            {**env, "OPSMANTIK_PARTITION_KEY": "event"},
            engines,
            single,
        )
    finally:
        cluster.kafka_down()
        remove(cluster)  # a fresh cluster each run


def gateway_batches(
    bench: Bench,
    name: str,
    kind: str,
    site: SiteKey,
    topic: str,
    env: dict[str, str],
    engine_pids: list[int],
    baseline: Row | None,
) -> Row:
    """One gateway, 100-event batches, a 1 s delivery deadline (250 ms by default): three JVMs
    share 2 cores with the load here, and the rows are meant to compare the Kafka paths, not
    the outbox (the share of events answered from it is noted)."""
    gw = bench.env.start(
        f"gateway-{name.split(':')[0].replace(' ', '')}",
        [*OPSMANTIK, "gateway", "--host", "127.0.0.1", "--port", str(CLUSTER_GATEWAY_PORT)],
        topic,
        **env,
        OPSMANTIK_DELIVERY_TIMEOUT_MS="1000",
    )
    try:
        wait_port(CLUSTER_GATEWAY_PORT, gw)
        bench._load(CLUSTER_GATEWAY_PORT, site.api_key, 100, "c-warm", bench.plan.warmup, [])
        ours, engines = CpuMeter([gw.pid]), CpuMeter(engine_pids)
        outbox_before = bench.env.value("outbox_count", site.site_id)
        r = bench._load(
            CLUSTER_GATEWAY_PORT, site.api_key, 100, "c-batch", bench.plan.seconds, [ours, engines]
        )
        to_outbox = bench.env.value("outbox_count", site.site_id) - outbox_before
        row = bench._http_row(
            name,
            kind,
            r,
            ours,
            engines,
            baseline.name if baseline else None,
            baseline.events_per_s if baseline else None,
            r.events_per_s,
        )
        row.notes.append(
            f"gateway alone, acks=all, delivery deadline 1 s; {to_outbox:,} of {r.events:,} "
            "events answered from the outbox (a missed deadline)"
        )
        return row
    finally:
        gw.stop()
