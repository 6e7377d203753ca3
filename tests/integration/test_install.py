"""`pip install .` (not editable) into a fresh venv installs the one package `opsmantik` and a
working command: migrations, JSON Schemas and SQL ship as package data, so `migrate` on a fresh
database creates every table, and `sites create`, `audit`, `slo-report` and `billing verify` work.
The source copy is deleted before anything runs, and every command runs outside the checkout, so
nothing can be imported from a source tree by accident."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest
from opsmantik.billing.export import export_chunks
from opsmantik.config import Settings
from opsmantik.db.migrate import discover
from opsmantik.months import label

ROOT = Path(__file__).resolve().parents[2]
# The installed package's location and the distribution's top-level import names (from its RECORD).
TOP_LEVEL = """
import json, opsmantik
from importlib.metadata import distribution
files = distribution("opsmantik").files or []
top = sorted({f.parts[0] for f in files if not f.parts[0].endswith(".dist-info") and f.parts[0] != ".."})
print(json.dumps({"file": opsmantik.__file__, "top_level": top}))
"""
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


def test_pyproject_lists_every_package() -> None:
    # pyproject.toml lists the packages (`find` cannot see opsmantik.schemas, mapped to schemas/):
    # a new subpackage missing from the list would be left out of the wheel.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"": "services", "opsmantik.schemas": "schemas"}
    tree = {
        ".".join(p.parent.relative_to(ROOT / "services").parts)
        for p in (ROOT / "services").rglob("__init__.py")
        if "egg-info" not in str(p)
    }
    assert set(setuptools["packages"]) == tree | {"opsmantik.schemas", "opsmantik.schemas.postgres"}
    assert (ROOT / "schemas" / "__init__.py").is_file()


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


def without_partitions(names: set[str]) -> set[str]:
    return {n for n in names if not n.startswith("ingest_idempotency_p")}


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
    # The venv without a pip of its own: ours installs into it (`--python`), and bytecode is
    # compiled by the commands below as they import, not for all of pyarrow and Faust (9 s less).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
        + ["--no-compile", str(src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # pip's cache: ~15 s
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(src)  # nothing may come from the source tree from here on

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", TOP_LEVEL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    installed = json.loads(where.stdout)
    assert installed["file"].startswith(str(venv)), installed
    assert installed["top_level"] == ["opsmantik"], installed  # nothing named `services`, `tests`, …

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
    # Every table the source tree's migrations create (the session database was migrated by them);
    # the ledger's month partitions differ (the session's worker adds months on demand), so they
    # are compared apart: the fresh database has the current month's.
    expected = without_partitions(await tables(settings.database_url))
    assert {"sites", "api_keys", "ingest_idempotency", "site_usage_monthly", "schema_migrations"} <= expected
    fresh = await tables(fresh_database)
    assert without_partitions(fresh) == expected
    assert f"ingest_idempotency_p{datetime.now(UTC):%Y_%m}" in fresh

    made = subprocess.run(
        [opsmantik, "sites", "create", "installed", "--json"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    site = json.loads(made.stdout)
    assert site["api_key"].startswith("omk_")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [opsmantik, *args], cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=120
        )

    month = date.today().replace(day=1)
    audit = run("audit", "--month", label(month), "--json", "--wait", "0")
    assert audit.returncode == 0, audit.stderr  # the event schema is package data
    assert json.loads(audit.stdout)["unaccounted"] == 0
    slo = run("slo-report", "--month", label(month), "--json")
    assert slo.returncode in (0, 1), slo.stderr  # 1 = an objective breached, on an empty month
    assert set(json.loads(slo.stdout)["objectives"]) >= {"availability", "integrity", "accuracy"}

    # A dispute export of the site's (empty) month, verified by the installed command; one
    # changed total is a mismatch.
    export = tmp_path / "export.ndjson"
    conn = await asyncpg.connect(fresh_database)
    try:
        async with conn.transaction(isolation="repeatable_read"):
            chunks = [
                c async for c in export_chunks(conn, uuid.UUID(site["site_id"]), month, "ndjson", None, None)
            ]
    finally:
        await conn.close()
    export.write_bytes(b"".join(chunks))
    verified = run("billing", "verify", str(export), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    export.write_bytes(export.read_bytes().replace(b'"events":0', b'"events":1', 1))
    tampered = run("billing", "verify", str(export), "--json")
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
