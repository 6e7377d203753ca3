"""Shared fixtures. Integration tests run against the real local stack (`opsmantik stack up`):
each test session gets its own database and its own topics, so sessions never collide."""

from __future__ import annotations

import pytest
from opsmantik.config import Settings

from tests.support.environment import environment_fixtures


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_env()


settings, pool = environment_fixtures("session")
