"""Shared fixtures. Integration tests run against the real local stack (`opsmantik stack up`):
each test session gets its own database and its own topics, so sessions never collide."""

from __future__ import annotations

import pytest
from opsmantik.config import Settings

from tests.support.environment import environment_fixtures
from tests.support.lanes import LANES, lane_of


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_env()


settings, pool = environment_fixtures("session")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lane", choices=LANES, help="only this lane's tests (tests/support/lanes.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lane = config.getoption("--lane")
    if lane is None:
        return
    keep, drop = [], []
    for item in items:
        markers = {m.name for m in item.iter_markers()}
        (keep if lane_of(item.path, markers) == lane else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
