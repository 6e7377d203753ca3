"""The 3-broker scenarios (`make cluster`): a private KRaft cluster of three brokers on free ports
(tests/support/stacks.py: base..base+2, quorum base+100..base+102, a fresh directory), Postgres
from the shared stack with a database of its own. Heavy (three JVMs): not in `make test`, only
with OPSMANTIK_CLUSTER=1."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator

import asyncpg
import pytest
from opsmantik.config import Settings
from opsmantik.devstack.stack import Stack

from tests.support.environment import create_environment, drop_environment
from tests.support.stacks import stack_fixture

collect_ignore = [] if os.environ.get("OPSMANTIK_CLUSTER") == "1" else ["test_cluster.py"]

cluster = stack_fixture("cluster", scope="session", brokers=3, start=Stack.kafka_up)


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
