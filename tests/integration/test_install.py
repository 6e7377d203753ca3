"""`pip install .` (not editable) into a fresh venv gives a working `opsmantik`: the migrations ship
as package data, so `migrate` on a fresh database creates every table, and a later command works.
Run from outside the checkout, so nothing can be imported from the source tree by accident."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from opsmantik.config import Settings
from opsmantik.db.migrate import discover

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(
    ".venv",
    ".local",
    ".git",
    "build",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "schemathesis-report",
)


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


@pytest.fixture
async def fresh_database(settings: Settings) -> AsyncIterator[str]:
    name = f"opsmantik_install_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield settings.database_url.rsplit("/", 1)[0] + "/" + name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_pip_install_then_migrate_creates_every_table(
    tmp_path: Path, settings: Settings, fresh_database: str
) -> None:
    # A copy of the source: pip builds in the tree it is given, and must not leave build/ in ours.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=NOT_SOURCE)
    venv = tmp_path / "venv"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # pip's cache: ~10 s
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(src)  # nothing may come from the source tree from here on

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import services; print(opsmantik.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.startswith(str(venv)), where

    run_env = {
        **env,
        "OPSMANTIK_DATABASE_URL": fresh_database,
        "OPSMANTIK_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "OPSMANTIK_TOPIC": settings.topic,
        "OPSMANTIK_BILLABLE_TOPIC": settings.billable_topic,
    }
    opsmantik = str(venv / "bin" / "opsmantik")
    migrate = subprocess.run(
        [opsmantik, "migrate", "--json"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert json.loads(migrate.stdout)["applied"] == [m.version for m in discover()]
    # Every table the source tree's migrations create (the session database was migrated by them).
    expected = await tables(settings.database_url)
    assert {"sites", "api_keys", "ingest_idempotency", "site_usage_monthly", "schema_migrations"} <= expected
    assert await tables(fresh_database) == expected

    made = subprocess.run(
        [opsmantik, "sites", "create", "installed", "--json"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["api_key"].startswith("omk_")
