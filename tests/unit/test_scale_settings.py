"""Pure parts of scale-out: replication from the cluster's size, the message key, a gateway's
share of a site's rate, and the new settings' validation at their edges."""

from __future__ import annotations

import uuid

import pytest
from opsmantik.config import Settings, SettingsError
from opsmantik.devstack.kafka_node import replication_for
from opsmantik.gateway.registry import GatewayRegistry
from opsmantik.kafka.settings import message_key, request_keys
from opsmantik.kafka.topics import replication


@pytest.mark.parametrize(("brokers", "factor", "min_isr"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_replication_follows_the_cluster_size(brokers: int, factor: int, min_isr: int) -> None:
    r = replication(Settings(), brokers)
    assert (r.factor, r.min_insync) == (factor, min_isr)
    assert replication_for(brokers) == (factor, min_isr)  # the brokers' own internal topics agree


def test_replication_settings_win() -> None:
    r = replication(Settings(replication_factor=2, min_insync_replicas=2), 3)
    assert (r.factor, r.min_insync) == (2, 2)


def test_message_key_spreads_a_site_unless_told_not_to() -> None:
    site = uuid.uuid4()
    assert message_key(Settings(), site, "e-1") == f"{site}/e-1".encode()
    assert message_key(Settings(), site, "e-1") != message_key(Settings(), site, "e-2")
    assert message_key(Settings(partition_key="site"), site, "e-1") == str(site).encode()


def test_request_keys_one_partition_per_request_by_default() -> None:
    site = uuid.uuid4()
    assert request_keys(Settings(), site, ["a", "b", "c"]) == [f"{site}/a".encode()] * 3
    assert request_keys(Settings(), site, ["b"]) == [f"{site}/b".encode()]
    assert request_keys(Settings(partition_key="event"), site, ["a", "b"]) == [
        f"{site}/a".encode(),
        f"{site}/b".encode(),
    ]
    assert request_keys(Settings(partition_key="site"), site, ["a", "b"]) == [str(site).encode()] * 2
    assert request_keys(Settings(), site, []) == []


def test_a_gateway_takes_rate_over_n() -> None:
    reg = GatewayRegistry(heartbeat_s=1.0, dead_after_s=3.0)
    assert reg.share(100.0, 10) == (100.0, 10)
    reg.live = 2
    assert reg.share(100.0, 10) == (50.0, 5)
    reg.live = 3
    rate, burst = reg.share(100.0, 1)
    assert rate == pytest.approx(100 / 3) and burst == 1  # never a bucket that admits nothing


@pytest.mark.parametrize(
    ("env", "ok"),
    [
        ({"OPSMANTIK_WORKER_METRICS_PORT": "0"}, True),
        ({"OPSMANTIK_WORKER_METRICS_PORT": "-1"}, True),
        ({"OPSMANTIK_WORKER_METRICS_PORT": "-2"}, False),
        ({"OPSMANTIK_RELAY_METRICS_PORT": "65535"}, True),
        ({"OPSMANTIK_RELAY_METRICS_PORT": "65536"}, False),
        ({"OPSMANTIK_REPLICATION_FACTOR": "3", "OPSMANTIK_MIN_INSYNC_REPLICAS": "3"}, True),
        ({"OPSMANTIK_REPLICATION_FACTOR": "2", "OPSMANTIK_MIN_INSYNC_REPLICAS": "3"}, False),
        ({"OPSMANTIK_REPLICATION_FACTOR": "-1"}, False),
        ({"OPSMANTIK_PARTITION_KEY": "site"}, True),
        ({"OPSMANTIK_PARTITION_KEY": "event"}, True),
        ({"OPSMANTIK_PARTITION_KEY": "request"}, True),
        ({"OPSMANTIK_PARTITION_KEY": "site_event"}, False),
        ({"OPSMANTIK_GATEWAY_HEARTBEAT_S": "1", "OPSMANTIK_GATEWAY_DEAD_AFTER_S": "1"}, False),
        ({"OPSMANTIK_GATEWAY_HEARTBEAT_S": "1", "OPSMANTIK_GATEWAY_DEAD_AFTER_S": "1.01"}, True),
    ],
)
def test_scale_settings_at_their_edges(env: dict[str, str], ok: bool) -> None:
    if ok:
        Settings.from_env(env)
    else:
        with pytest.raises(SettingsError):
            Settings.from_env(env)
