"""The 3-broker scenarios (`make cluster`): a private KRaft cluster of three brokers on ports
26092-26094 (quorum 26192-26194) under .local/cluster, Postgres from the shared stack with a
database of its own. Heavy (three JVMs): not in `make test`, only with OPSMANTIK_CLUSTER=1."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from opsmantik.config import Settings
from opsmantik.devstack.stack import ROOT, Stack

from tests.support.environment import create_environment, drop_environment

CLUSTER_HOME = ROOT / ".local" / "cluster"
CLUSTER_PORT = 26092
collect_ignore = [] if os.environ.get("OPSMANTIK_CLUSTER") == "1" else ["test_cluster.py"]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Stack]:
    stack = Stack(home=CLUSTER_HOME, kafka_port=CLUSTER_PORT, pg_port=26432, brokers=3)
    try:
        stack.kafka_up()
        yield stack
    finally:
        stack.kafka_down()


@pytest.fixture(scope="session")
async def settings(base_settings: Settings, cluster: Stack) -> AsyncIterator[Settings]:
    on_cluster = dataclasses.replace(base_settings, kafka_bootstrap=cluster.kafka_bootstrap)
    s = await create_environment(on_cluster)
    yield s
    await drop_environment(base_settings, s)


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
    yield p
    await p.close()
