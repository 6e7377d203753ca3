"""The operator CLI against the real stack: stack status, sites and keys."""

import hashlib
import json
import os
import subprocess
import sys
import uuid

import asyncpg
from opsmantik.devstack.stack import Stack


def opsmantik(settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OPSMANTIK_DATABASE_URL": settings.database_url,
        "OPSMANTIK_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "opsmantik.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_stack_up_is_idempotent_and_status_names_everything(settings):
    before = Stack().status()
    assert all(e.running for e in before)
    assert Stack().up() == []  # a second `up` changes nothing
    after = Stack().status()
    assert [(e.pid, e.port) for e in after] == [(e.pid, e.port) for e in before]
    status = json.loads(opsmantik(settings, "stack", "status", "--json").stdout)
    kafka, pg = status
    assert kafka["name"] == "kafka" and kafka["version"].startswith("4.") and kafka["running"]
    assert pg["name"] == "postgres" and pg["version"][0].isdigit() and pg["running"]
    assert kafka["pid"] > 0 and pg["pid"] > 0 and kafka["data_dir"] and pg["data_dir"]
    up = json.loads(opsmantik(settings, "stack", "up", "--json").stdout)  # idempotent: starts nothing
    assert up["started"] == [] and [e["name"] for e in up["engines"]] == ["kafka", "postgres"]
    assert all(e["running"] for e in up["engines"])


def test_stack_env_prints_the_two_settings(settings):
    out = opsmantik(settings, "stack", "env").stdout.splitlines()
    assert out[0].startswith("export OPSMANTIK_DATABASE_URL=postgresql://")
    assert out[1].startswith("export OPSMANTIK_KAFKA_BOOTSTRAP=127.0.0.1:")
    doc = json.loads(opsmantik(settings, "stack", "env", "--json").stdout)
    assert doc["OPSMANTIK_KAFKA_BOOTSTRAP"] == out[1].split("=", 1)[1]


async def test_site_key_is_shown_once_and_stored_only_hashed(settings):
    made = json.loads(
        opsmantik(
            settings,
            "sites",
            "create",
            "acme",
            "--monthly-quota",
            "100",
            "--hard-cap",
            "500",
            "--rate",
            "5",
            "--burst",
            "10",
            "--json",
        ).stdout
    )
    api_key = made["api_key"]
    assert api_key.startswith("omk_") and len(api_key) > 40
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT key_hash, key_prefix FROM api_keys WHERE site_id = $1", uuid.UUID(made["site_id"])
        )
        assert bytes(row["key_hash"]) == hashlib.sha256(api_key.encode()).digest()
        dump = str(await conn.fetch("SELECT * FROM api_keys")) + str(await conn.fetch("SELECT * FROM sites"))
        assert api_key not in dump and api_key[len("omk_") :] not in dump
    finally:
        await conn.close()
    listed = json.loads(opsmantik(settings, "sites", "list", "--json").stdout)
    acme = next(s for s in listed if s["site_id"] == made["site_id"])
    assert (acme["monthly_quota"], acme["hard_cap"], acme["rate_per_s"], acme["burst"]) == (100, 500, 5.0, 10)
    assert acme["active_keys"] == 1
    assert api_key not in json.dumps(listed)


async def test_keys_create_and_revoke(settings):
    site = json.loads(opsmantik(settings, "sites", "create", "keys-site", "--json").stdout)
    second = json.loads(opsmantik(settings, "keys", "create", site["site_id"], "--json").stdout)
    assert second["api_key"] != site["api_key"]
    opsmantik(settings, "keys", "revoke", second["key_id"])
    again = opsmantik(settings, "keys", "revoke", second["key_id"], check=False)
    assert again.returncode == 1 and "no active key" in again.stderr
    conn = await asyncpg.connect(settings.database_url)
    try:
        active = await conn.fetchval(
            "SELECT count(*) FROM api_keys WHERE site_id = $1::uuid AND revoked_at IS NULL", site["site_id"]
        )
    finally:
        await conn.close()
    assert active == 1


def test_invalid_settings_are_all_listed(settings):
    env = {**os.environ, "OPSMANTIK_DATABASE_URL": "mysql://nope", "OPSMANTIK_GATEWAY_PORT": "x"}
    proc = subprocess.run(
        [sys.executable, "-m", "opsmantik.cli", "sites", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "OPSMANTIK_DATABASE_URL" in proc.stderr and "OPSMANTIK_GATEWAY_PORT" in proc.stderr
