import pytest
from opsmantik.config import LOCAL_DATABASE_URL, Settings, SettingsError


def test_defaults_point_at_the_local_stack():
    s = Settings.from_env({})
    assert s.database_url == LOCAL_DATABASE_URL
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.topic == "opsmantik.ingest.v1"
    assert s.gateway_port == 8080


def test_env_values_are_typed():
    s = Settings.from_env(
        {"OPSMANTIK_GATEWAY_PORT": "9000", "OPSMANTIK_USAGE_STALE_S": "2.5", "OPSMANTIK_TOPIC": "t"}
    )
    assert (s.gateway_port, s.usage_stale_s, s.topic) == (9000, 2.5, "t")


def test_every_problem_is_listed_at_once():
    with pytest.raises(SettingsError) as err:
        Settings.from_env(
            {
                "OPSMANTIK_DATABASE_URL": "mysql://x",
                "OPSMANTIK_KAFKA_BOOTSTRAP": "nohostport",
                "OPSMANTIK_GATEWAY_PORT": "eighty",
                "OPSMANTIK_MAX_BATCH_EVENTS": "0",
            }
        )
    text = str(err.value)
    assert len(err.value.problems) == 4
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP", "GATEWAY_PORT", "MAX_BATCH_EVENTS"):
        assert name in text


def test_only_the_settings_object_reads_the_environment() -> None:
    """Every OPSMANTIK_* knob goes through services/opsmantik/config.py (typed, validated, documented in the
    CLI help); OPSMANTIK_KAFKA_HEAP was once read by stack.py on its own."""
    import re
    from pathlib import Path

    services = Path(__file__).resolve().parents[2] / "services"
    # Reading a variable (handing the whole environment to a child process is not reading one).
    reads = re.compile(r"\bos\.environ(\.get\(|\[)|\bos\.getenv\(|\bfrom os import .*\b(environ|getenv)\b")
    offenders = [
        str(p.relative_to(services))
        for p in services.rglob("*.py")
        if p.name != "config.py" and reads.search(p.read_text())
    ]
    assert offenders == []


def test_kafka_heap_is_a_setting() -> None:
    assert Settings.from_env({"OPSMANTIK_KAFKA_HEAP": "2g"}).kafka_heap == "2g"
    with pytest.raises(SettingsError, match="OPSMANTIK_KAFKA_HEAP"):
        Settings.from_env({"OPSMANTIK_KAFKA_HEAP": "lots"})


# ---------------------------------------------------------------- limits at their edges

EDGES = [
    # (variable, the last value accepted, the first refused) at each end of a limit
    ("OPSMANTIK_TOPIC_PARTITIONS", "1", "0"),
    ("OPSMANTIK_MAX_BATCH_EVENTS", "1", "0"),
    ("OPSMANTIK_MAX_BODY_BYTES", "1", "0"),
    ("OPSMANTIK_DELIVERY_TIMEOUT_MS", "1", "0"),
    ("OPSMANTIK_WORKER_BATCH", "1", "0"),
    ("OPSMANTIK_RELAY_BATCH", "1", "0"),
    ("OPSMANTIK_EXPORT_MAX_PER_SITE", "1", "0"),
    ("OPSMANTIK_REPLICATION_FACTOR", "0", "-1"),
    ("OPSMANTIK_GATEWAY_PORT", "1", "0"),
    ("OPSMANTIK_GATEWAY_PORT", "65535", "65536"),
    ("OPSMANTIK_AUDIT_METRICS_PORT", "0", "-1"),
    ("OPSMANTIK_AUDIT_METRICS_PORT", "65535", "65536"),
    ("OPSMANTIK_WORKER_METRICS_PORT", "-1", "-2"),
    ("OPSMANTIK_RELAY_IDLE_S", "0.001", "0"),
    ("OPSMANTIK_WORKER_RETRY_MAX_S", "0.001", "-1"),
    ("OPSMANTIK_AUDIT_WAIT_S", "0", "-0.001"),
    ("OPSMANTIK_BILLING_CLOSE_GRACE_DAYS", "0", "-0.5"),
    ("OPSMANTIK_AUTH_FAILURE_DELAY_S", "0", "-0.01"),
    ("OPSMANTIK_AUTH_FAILURE_DELAY_S", "10", "10.01"),
    ("OPSMANTIK_KEY_SECRET", "k" * 16, "k" * 15),
    ("OPSMANTIK_KEY_SECRET_PREVIOUS", "k" * 16, "k" * 15),
    ("OPSMANTIK_PARTITION_KEY", "site", "Site"),
    ("OPSMANTIK_SLA_LOSS_AUDIT", "off", "no"),
    ("OPSMANTIK_KAFKA_HEAP", "1", "0"),
    ("OPSMANTIK_KAFKA_BOOTSTRAP", "a:1,b:2", "a:1,b"),
    ("OPSMANTIK_DATABASE_URL", "postgres://h/db", "postgres:///db"),
]


@pytest.mark.parametrize(("name", "accepted", "refused"), EDGES, ids=[f"{e[0]}={e[2]}" for e in EDGES])
def test_a_limit_accepts_its_edge_and_refuses_one_beyond(name: str, accepted: str, refused: str) -> None:
    field = name.removeprefix("OPSMANTIK_").lower()
    value = getattr(Settings.from_env({name: accepted}), field)
    assert str(value) == accepted or value == float(accepted)
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: refused})
    (problem,) = err.value.problems  # one variable wrong → one line, naming it first
    assert problem.startswith(name + " ") or problem.startswith(name + ":"), problem
    if "KEY_SECRET" in name:
        assert refused not in str(err.value)  # a secret is never echoed


RELATED = [
    # (variables that are valid alone, whether they are valid together, a variable the error names)
    ({"OPSMANTIK_DB_POOL_MIN": "3", "OPSMANTIK_DB_POOL_MAX": "3"}, True, ""),
    ({"OPSMANTIK_DB_POOL_MIN": "4", "OPSMANTIK_DB_POOL_MAX": "3"}, False, "OPSMANTIK_DB_POOL_MIN"),
    ({"OPSMANTIK_AUDIT_GROUP": "g", "OPSMANTIK_WORKER_GROUP": "g"}, False, "OPSMANTIK_WORKER_GROUP"),
    ({"OPSMANTIK_REPLICATION_FACTOR": "0", "OPSMANTIK_MIN_INSYNC_REPLICAS": "5"}, True, ""),
    (
        {"OPSMANTIK_REPLICATION_FACTOR": "2", "OPSMANTIK_MIN_INSYNC_REPLICAS": "3"},
        False,
        "REPLICATION_FACTOR",
    ),
    ({"OPSMANTIK_GATEWAY_HEARTBEAT_S": "2", "OPSMANTIK_GATEWAY_DEAD_AFTER_S": "2"}, False, "HEARTBEAT_S"),
]


@pytest.mark.parametrize(("env", "ok", "named"), RELATED)
def test_related_settings_are_checked_together(env: dict[str, str], ok: bool, named: str) -> None:
    if ok:
        Settings.from_env(env)
        return
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    (problem,) = err.value.problems
    assert named in problem and problem.startswith("OPSMANTIK_"), problem


def test_every_setting_is_declared_with_its_concern_doc_and_check() -> None:
    """A field added as a bare default (no concern, no doc, no check) fails here."""
    from dataclasses import fields

    from opsmantik.config import PREFIX, rule_of

    groups: dict[str, list[str]] = {}  # concern → its variables
    for f in fields(Settings):
        rule = rule_of(f.name)  # KeyError for a field not declared with setting()
        assert rule.doc and rule.concern, f.name
        assert rule.check(f.default) is None, f"{f.name}: its default fails its own check"
        groups.setdefault(rule.concern, []).append(PREFIX + f.name.upper())
    assert {"kafka", "database", "gateway", "keys", "worker", "relay", "audit", "billing"} <= set(groups)
    assert "OPSMANTIK_GATEWAY_PORT" in groups["gateway"] and "OPSMANTIK_RELAY_BATCH" in groups["relay"]
    assert Settings().validate() == []
