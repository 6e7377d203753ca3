"""What a command says when it cannot do its job: an engine down (every command, derived from the
parser), a database not migrated, an edited migration, an unknown site (a usage error, exit 2).
Always one line on stderr, the documented exit code, never a traceback; an engine that is down is
named with the command that starts it. Real Postgres (a database of this module's own) where one is needed."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from opsmantik.cli import args as cli_args
from opsmantik.cli.args import CANNOT_RUN, CHECK_FAILED, START_ENGINES, USAGE
from opsmantik.config import Settings

from tests.support.cli import PARSER, required_args, run_main
from tests.support.environment import module_environment

settings, pool = module_environment()

# Commands that cannot be run "with the engines down" in a test, and why. Every other command
# registered in services/opsmantik/cli/main.py is run; a name here that no longer exists fails the test.
NOT_RUN = {
    "stack": "manages the local engines on fixed ports: never run from a test",
    "gateway": "a long-running service; it starts without Postgres by design (tested elsewhere)",
    "worker": "a long-running service that retries the engines by design",
    "relay": "a long-running service that retries the engines by design",
    "run": "starts the local stack",
    "billing verify": "offline: reads a file, uses no engine",
    "send": "talks to a gateway over HTTP, not to the engines (clients/python/tests/test_client.py)",
    "backup": "copies the local stack's own Postgres (pg_basebackup): private stacks in test_recovery.py",
    "restore": "replaces the local stack's Postgres data directory: private stacks in test_recovery.py",
}
# Arguments a command needs beyond what its argument types supply (cli_support.required_args).
ARGS = {
    "maintenance add": ["2099-01-01T00:00:00Z", "2099-01-01T02:00:00Z", "--reason", "x"],
    "tokens create": ["--operator"],
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: nothing listens there


@pytest.fixture
def engines_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OPSMANTIK_DATABASE_URL", f"postgresql://opsmantik@127.0.0.1:{closed_port()}/x")
    monkeypatch.setenv("OPSMANTIK_KAFKA_BOOTSTRAP", f"127.0.0.1:{closed_port()}")
    # `dispatcher` runs in this process: its /metrics on no port, so no listener outlives it
    monkeypatch.setenv("OPSMANTIK_DISPATCHER_METRICS_PORT", "-1")
    yield


def use(monkeypatch: pytest.MonkeyPatch, s: Settings, **over: str) -> None:
    monkeypatch.setenv("OPSMANTIK_DATABASE_URL", over.get("database_url", s.database_url))
    monkeypatch.setenv("OPSMANTIK_KAFKA_BOOTSTRAP", over.get("kafka_bootstrap", s.kafka_bootstrap))
    monkeypatch.setenv("OPSMANTIK_TOPIC", s.topic)
    monkeypatch.setenv("OPSMANTIK_BILLABLE_TOPIC", s.billable_topic)


def one_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


ALL = [path for path, _ in cli_args.leaves(PARSER)]
COMMANDS = [p for p in ALL if p[0] not in NOT_RUN and " ".join(p) not in NOT_RUN]


def test_the_exemptions_name_real_commands() -> None:
    names = {p[0] for p in ALL} | {" ".join(p) for p in ALL}
    assert set(NOT_RUN) <= names and set(ARGS) <= names
    assert len(COMMANDS) >= 7


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_names_the_engine_that_is_down(engines_down: None, path: tuple[str, ...]) -> None:
    leaf = dict(cli_args.leaves(PARSER))[path]
    code, out, err = run_main([*path, *ARGS.get(" ".join(path), required_args(leaf))])
    assert code == CANNOT_RUN, (path, code, out, err)
    assert ("Postgres" in one_line(err) or "Kafka" in err) and f"`{START_ENGINES}`" in err, err


def test_debug_shows_the_real_exception(engines_down: None) -> None:
    with pytest.raises(OSError):
        run_main(["--debug", "sites", "list"])


async def cli(argv: list[str]) -> tuple[int, str, str]:
    """main() in a thread: it calls asyncio.run, which cannot nest in the test's loop."""
    return await asyncio.to_thread(run_main, argv)


async def test_migrate_with_the_broker_down_fails_at_once_and_touches_nothing(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, empty: str
) -> None:
    use(monkeypatch, settings, database_url=empty, kafka_bootstrap=f"127.0.0.1:{closed_port()}")
    code, _, err = await cli(["migrate"])
    assert code == CANNOT_RUN and one_line(err).startswith("opsmantik migrate: Kafka at 127.0.0.1:"), err
    conn = await asyncpg.connect(empty)
    try:  # checked before the database: all or nothing
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()


async def test_a_database_not_migrated_says_run_migrate(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, empty: str
) -> None:
    use(monkeypatch, settings, database_url=empty)
    code, _, err = await cli(["sites", "list"])
    assert code == CANNOT_RUN and "`opsmantik migrate`" in one_line(err), err


async def test_an_edited_migration_is_a_failed_check(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    use(monkeypatch, settings)
    assert (await cli(["migrate"]))[0] == 0
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = '0001'")
        code, _, err = await cli(["migrate"])
    finally:
        await conn.execute(
            "UPDATE schema_migrations SET checksum = $1 WHERE version = '0001'", _checksum("0001")
        )
        await conn.close()
    assert code == CHECK_FAILED and "changed after it was applied" in one_line(err), err


async def test_unknown_site_and_key(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    use(monkeypatch, settings)
    missing = uuid.uuid4()
    # A site id that names no site is a bad argument like any other (exit 2), and nothing is written.
    code, out, err = await cli(["keys", "create", str(missing)])
    assert code == USAGE and one_line(err) == f"opsmantik keys create: no site {missing}\n", (code, err)
    assert out == "", out
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE site_id = $1", missing) == 0
    finally:
        await conn.close()
    # A key id with no active key is "not found" (exit 1): it may have existed and been revoked.
    code, _, err = await cli(["keys", "revoke", str(missing)])
    assert code == CHECK_FAILED and f"no active key {missing}" in one_line(err), err


async def test_sites_create_at_the_limits_edges(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    use(monkeypatch, settings)
    code, out, err = await cli(
        [
            "sites",
            "create",
            "x" * 200,
            "--monthly-quota",
            "0",
            "--hard-cap",
            "1",
            "--rate",
            "1e9",
            "--burst",
            str(2**31 - 1),
            "--json",
        ]
    )
    assert code == 0, err
    assert (await cli(["sites", "create", "x", "--hard-cap", str(2**63 - 1)]))[0] == 0


def _checksum(version: str) -> str:
    from opsmantik.db.migrate import discover

    return next(m.checksum for m in discover() if m.version == version)


@pytest.fixture
async def empty(settings: Settings) -> AsyncIterator[str]:
    """A database of its own with nothing in it."""
    name = f"opsmantik_empty_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield settings.database_url.rsplit("/", 1)[0] + "/" + name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
