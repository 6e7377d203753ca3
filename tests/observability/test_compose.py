"""docker-compose.yml describes the same stack as the CLI (no Docker engine here to run it): the
same settings variables and topics, every service with a command the CLI accepts, three KRaft
brokers as `opsmantik stack up --brokers 3` runs them (replication 3, min ISR 2, on the same host
ports), Prometheus with the rules and the jobs the alerts name, Grafana with the provisioned
datasource and dashboard."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import yaml
from opsmantik.cli import build_parser
from opsmantik.config import LOCAL_KAFKA_PORT, LOCAL_PG_PORT, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SETTINGS = {"OPSMANTIK_" + f.name.upper() for f in fields(Settings)}
BROKERS = ["kafka-1", "kafka-2", "kafka-3"]
# services/opsmantik/devstack/kafka_node.py replication_for(3): RF = min(3, brokers), min ISR = RF - 1.
RF, MIN_ISR = 3, 2


def mounts(service: str) -> dict[str, str]:
    """container path → repository path of a service's bind mounts."""
    out = {}
    for v in SERVICES[service].get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith("./"):
            out[dst] = src[2:]
    return out


def test_every_service_is_present() -> None:
    assert set(SERVICES) == {
        *BROKERS,
        "postgres",
        "migrate",
        "gateway",
        "worker",
        "relay",
        "audit",
        "prometheus",
        "grafana",
    }


def test_opsmantik_services_use_the_clis_commands_and_settings() -> None:
    parser = build_parser()
    for name in ("migrate", "gateway", "worker", "relay", "audit"):
        svc = SERVICES[name]
        cmd = svc["command"]
        assert cmd[0] == "opsmantik" and cmd[1] == name, (name, cmd)
        parser.parse_args(cmd[1:])  # exits (SystemExit) on anything the CLI does not accept
        env = svc["environment"]
        unknown = {k for k in env if k.startswith("OPSMANTIK_")} - SETTINGS
        assert unknown == set(), f"{name}: variables the settings object does not read: {unknown}"
        # The values parse as the settings object would read them (every error listed otherwise).
        s = Settings.from_env({k: str(v) for k, v in env.items()})
        assert s.topic == Settings().topic and s.billable_topic == Settings().billable_topic
        assert s.topic_partitions == Settings().topic_partitions
        for broker in BROKERS:
            kafka_env = SERVICES[broker]["environment"]
            assert str(kafka_env["KAFKA_NUM_PARTITIONS"]) == str(s.topic_partitions)
        # every broker, on its in-network listener; the topics migrate creates replicated 3, min ISR 2
        assert s.kafka_bootstrap == ",".join(f"{b}:9092" for b in BROKERS)
        assert (s.replication_factor, s.min_insync_replicas) == (RF, MIN_ISR)
        assert s.database_url.endswith("@postgres:5432/opsmantik")
        assert s.metrics_host == "0.0.0.0"  # else Prometheus in another container cannot scrape


def test_kafka_is_three_kraft_nodes_with_replication_3_and_min_isr_2() -> None:
    envs = [SERVICES[b]["environment"] for b in BROKERS]
    voters = ",".join(f"{i}@{b}:9093" for i, b in enumerate(BROKERS, 1))
    assert [int(e["KAFKA_NODE_ID"]) for e in envs] == [1, 2, 3]
    for broker, env in zip(BROKERS, envs, strict=True):
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", broker
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters, broker
        assert env["CLUSTER_ID"] == envs[0]["CLUSTER_ID"], broker  # one cluster, not three
        # listener name → advertised address; the brokers reach each other on the in-network one
        advertised = dict(a.split("://") for a in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
        assert advertised["PLAINTEXT"] == f"{broker}:9092"
        assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT", broker
        for key in (
            "DEFAULT_REPLICATION_FACTOR",
            "OFFSETS_TOPIC_REPLICATION_FACTOR",
            "TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        ):
            assert int(env[f"KAFKA_{key}"]) == RF, (broker, key)
        for key in (
            "MIN_INSYNC_REPLICAS",
            "TRANSACTION_STATE_LOG_MIN_ISR",
            "SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
        ):
            assert int(env[f"KAFKA_{key}"]) == MIN_ISR, (broker, key)
    # each node its own data volume
    data = [v.split(":")[0] for b in BROKERS for v in SERVICES[b]["volumes"]]
    assert len(set(data)) == len(BROKERS) and set(data) <= set(COMPOSE["volumes"])
    assert set(BROKERS) <= set(SERVICES["migrate"]["depends_on"])


def test_ports_match_the_local_stack_and_the_defaults() -> None:
    d = Settings()
    # the host ports of the local 3-broker stack (LOCAL_KAFKA_PORT + node - 1), each advertised as
    # such on the EXTERNAL listener so that a client on the host can follow the metadata
    for i, broker in enumerate(BROKERS):
        port = LOCAL_KAFKA_PORT + i
        assert SERVICES[broker]["ports"] == [f"{port}:9094"], broker
        env = SERVICES[broker]["environment"]
        assert f"EXTERNAL://localhost:{port}" in env["KAFKA_ADVERTISED_LISTENERS"].split(","), broker
        assert "EXTERNAL://:9094" in env["KAFKA_LISTENERS"].split(","), broker
    assert SERVICES["postgres"]["ports"] == [f"{LOCAL_PG_PORT}:5432"]
    gw = SERVICES["gateway"]["command"]
    assert gw[gw.index("--port") + 1] == str(d.gateway_port)
    assert SERVICES["postgres"]["environment"]["POSTGRES_DB"] == d.database_url.rsplit("/", 1)[1]


def test_prometheus_has_the_rules_and_scrapes_every_process() -> None:
    m = mounts("prometheus")
    config_path = ROOT / m["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    for rules in config["rule_files"]:
        assert m[f"/etc/prometheus/{rules}"] == "deploy/prometheus/opsmantik.rules.yml"
    d = Settings()
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == {
        "opsmantik-gateway": [f"gateway:{d.gateway_port}"],
        "opsmantik-worker": [f"worker:{d.worker_metrics_port}"],
        "opsmantik-relay": [f"relay:{d.relay_metrics_port}"],
        "opsmantik-audit": [f"audit:{d.audit_metrics_port}"],
    }
    # the local config (make run) has the same jobs, on 127.0.0.1
    local = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert {j["job_name"] for j in local["scrape_configs"]} == set(jobs)
    # the job the gateway-down alert names exists
    rules = (ROOT / "deploy" / "prometheus" / "opsmantik.rules.yml").read_text()
    assert 'up{job="opsmantik-gateway"}' in rules


def test_grafana_provisions_the_datasource_and_dashboard() -> None:
    m = mounts("grafana")
    prov = ROOT / m["/etc/grafana/provisioning"]
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [d["type"] for d in ds] == ["prometheus"] and ds[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((prov / "dashboards" / "opsmantik.yml").read_text())["providers"]
    folder = ROOT / m[providers[0]["options"]["path"]]
    dashboards = sorted(folder.glob("*.json"))
    assert dashboards, "no dashboard in the provisioned folder"
    for path in dashboards:
        dash = json.loads(path.read_text())
        for p in dash["panels"]:
            assert p["datasource"]["uid"] == ds[0]["uid"], p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == ds[0]["uid"], p["title"]
