"""A private stack (its own dirs and free ports, never the shared one): down loses no data,
up again is idempotent, and an engine that cannot start fails with its log tail."""

import subprocess

import pytest
from confluent_kafka import Consumer, Producer
from opsmantik.devstack.stack import Stack, StackError, _as_pg_owner

from tests.support.stacks import stack_fixture

pytestmark = pytest.mark.own_stack  # a private stack: make test's own-stack lane (scripts/test.sh)


def _psql(stack: Stack, sql: str) -> str:
    return stack._psql(sql, db="opsmantik")


def _consume_all(stack: Stack, topic: str) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": stack.kafka_bootstrap, "group.id": "lifecycle", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    for _ in range(60):
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
        if len(got) >= 3:
            break
    consumer.close()
    return got


private_stack = stack_fixture("lifecycle", scope="function", start=None)  # the tests start it


def test_down_keeps_data_and_up_is_idempotent(private_stack):
    stack = private_stack
    assert stack.up() == ["postgres", "kafka"]
    assert stack.up() == []
    _psql(stack, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    producer = Producer(
        {"bootstrap.servers": stack.kafka_bootstrap, "acks": "all", "enable.idempotence": True}
    )
    for i in range(3):
        producer.produce("kept.topic", value=f"m{i}".encode())
    assert producer.flush(30) == 0

    assert stack.down() == ["kafka", "postgres"]
    assert not any(e.running for e in stack.status())
    assert stack.down() == []

    assert stack.up() == ["postgres", "kafka"]
    assert _psql(stack, "SELECT x FROM kept") == "42"
    assert sorted(_consume_all(stack, "kept.topic")) == [b"m0", b"m1", b"m2"]


def test_a_failing_engine_reports_its_log_tail(private_stack):
    stack = private_stack
    stack.pg_up()
    stack.pg_down()
    conf = stack.pg_data() / "postgresql.conf"
    original = conf.read_text()
    subprocess.run(_as_pg_owner(["sh", "-c", f"echo 'no_such_setting = 1' >> {conf}"]), check=True)
    try:
        with pytest.raises(StackError) as err:
            stack.pg_up()
        assert "no_such_setting" in str(err.value) and "log tail" in str(err.value)
    finally:
        subprocess.run(_as_pg_owner(["sh", "-c", f"cat > {conf}"]), input=original, text=True, check=True)
