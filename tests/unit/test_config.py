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
