"""Private stacks: a Kafka (one broker or a cluster) and a Postgres of a suite's own, for the tests
that stop, kill or freeze engines (never the shared stack). Each gets a fresh directory and free
ports, chosen when it is made, and is stopped and removed afterwards, so two suites (or two
sessions on one machine) never meet on a port or a data directory.

    stack = stack_fixture("key-flood")                                   # module scope, started
    cluster = stack_fixture("cluster", "session", brokers=3, start=Stack.kafka_up)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from opsmantik.config import Settings
from opsmantik.devstack.kafka_node import CONTROLLER_OFFSET
from opsmantik.devstack.stack import Stack

from tests.support.environment import create_environment
from tests.support.process import free_port_block

PG_UNDER_VAR = Path("/var/lib/opsmantik")  # where Stack keeps Postgres when `home` is out of its reach


def kafka_offsets(brokers: int) -> list[int]:
    """The ports a Stack derives from its Kafka port (stack.py `nodes`): one broker listens on
    base and base+1 (controller); a cluster of N on base+0..N-1 and base+100..100+N-1."""
    if brokers == 1:
        return [0, 1]
    return [*range(brokers), *(CONTROLLER_OFFSET + i for i in range(brokers))]


def new_stack(name: str, brokers: int = 1, quick_start: bool = True) -> Stack:
    """A Stack (not started) in a fresh directory, on a free block of Kafka ports and a free
    Postgres port outside that block. `quick_start`: the broker JVM on C1 only (KafkaNode): these
    stacks live for a test or a module, so start-up is most of their broker's CPU (3.6 s to ready
    instead of 7.4 s on this machine); a benchmark's stack passes False."""
    home = Path(tempfile.mkdtemp(prefix=f"opsmantik-{name}-"))
    os.chmod(home, 0o755)  # the `postgres` user (when we run as root) keeps its data under home
    offsets = kafka_offsets(brokers)
    kafka = free_port_block(offsets)
    taken = {kafka + o for o in offsets}
    pg = free_port_block([0])
    while pg in taken:
        pg = free_port_block([0])
    return Stack(home=home, kafka_port=kafka, pg_port=pg, brokers=brokers, kafka_quick_start=quick_start)


def remove(stack: Stack) -> None:
    """A stopped stack's state: its directory and Postgres' data, wherever Stack put it."""
    link = stack.home / "postgres"
    target = link.resolve() if link.is_symlink() else None
    shutil.rmtree(stack.home, ignore_errors=True)
    if target is not None and PG_UNDER_VAR in target.parents:
        shutil.rmtree(target.parent, ignore_errors=True)


@contextmanager
def private_stack(name: str, brokers: int = 1) -> Iterator[Stack]:
    """A new stack for the block's duration (the caller starts what it needs); stopped and
    removed after, whatever happened (never a JVM left behind on a shared machine)."""
    stack = new_stack(name, brokers)
    try:
        yield stack
    finally:
        stack.down()
        remove(stack)


Scope = Literal["session", "package", "module", "class", "function"]


def stack_fixture(
    name: str, scope: Scope = "module", brokers: int = 1, start: Callable[[Stack], object] | None = Stack.up
) -> Any:
    """A fixture yielding a private stack; `start` runs first (Stack.up, Stack.kafka_up, or None
    for a test that starts the engines itself). Assign it to the fixture's name in the module."""

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[Stack]:
        """A private stack of its own (tests/support/stacks.py), removed after."""
        with private_stack(name, brokers) as stack:
            if start is not None:
                start(stack)
            yield stack

    return fixture


async def stack_settings(base: Settings, stack: Stack, **overrides: Any) -> Settings:
    """`base` on the stack, with a fresh migrated database and fresh topics of its own
    (tests/support/environment.py); nothing to drop after: the stack goes as a whole."""
    on_stack = dataclasses.replace(
        base, database_url=stack.database_url, kafka_bootstrap=stack.kafka_bootstrap, **overrides
    )
    return await create_environment(on_stack)
