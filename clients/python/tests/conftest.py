"""The client's tests use the server's fixtures: a database and topics of their own on the local
stack (tests/support/environment.py)."""

from __future__ import annotations

import pytest
from opsmantik.config import Settings

from tests.support.environment import environment_fixtures


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_env()


settings, pool = environment_fixtures("session")
