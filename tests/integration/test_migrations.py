"""Migration round trip on a real, empty Postgres database."""

import secrets

import asyncpg
import pytest
from opsmantik.db.migrate import MigrationError, discover, migrate


@pytest.fixture
async def empty_db(base_settings):
    name = f"opsmantik_mig_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base_settings.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(base_settings.database_url.rsplit("/", 1)[0] + "/" + name)
    yield conn
    await conn.close()
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def _schema(conn):
    return await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY 1, 2"
    )


async def test_apply_all_then_again_changes_nothing(empty_db):
    versions = [m.version for m in discover()]
    assert await migrate(empty_db) == versions
    before = await _schema(empty_db)
    assert await migrate(empty_db) == []
    assert await _schema(empty_db) == before
    recorded = await empty_db.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in recorded] == versions
    tables = {r["table_name"] for r in before}
    assert {
        "sites",
        "api_keys",
        "ingest_idempotency",
        "site_usage_monthly",
        "ingest_fallback_buffer",
        "schema_migrations",
    } <= tables


async def test_tenant_tables_are_keyed_by_site_first(empty_db):
    await migrate(empty_db)
    for table in ("api_keys", "ingest_idempotency", "site_usage_monthly"):
        first = await empty_db.fetchval(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = $1::regclass AND i.indisprimary",
            table,
        )
        assert first == "site_id", table


async def test_an_edited_applied_migration_is_refused(empty_db, tmp_path):
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    assert await migrate(empty_db, tmp_path) == ["0001"]
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(empty_db, tmp_path)
