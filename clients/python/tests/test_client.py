"""The producer client against the real gateway, worker and Kafka (shared stack; the broker
stop is in the long form, clients/python/tests/test_client_soak.py, `make client-soak`):
gateway SIGKILLed twice mid-stream, the producer SIGKILLed mid-stream, `opsmantik send`
interrupted and resumed, and the 1 MiB request edge. Every check is on the ledger: each
event's number present exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from client_support import (
    free_port,
    ledger_by_seq,
    ledger_event_ids,
    new_site,
    numbered,
    wait_ledger,
)
from opsmantik.config import Settings
from opsmantik_client import AsyncClient, Backoff, Result, _json
from opsmantik_client.batching import ENVELOPE_BYTES, GATEWAY_MAX_BYTES, encode_batch

from tests.support.environment import module_environment
from tests.support.pipeline import OPSMANTIK, ROOT, Pipeline, env_for, pipeline_fixture

pytestmark = pytest.mark.integration

settings, pool = module_environment()
STORED = {"accepted", "overlimit", "degraded", "fallback"}


# The whole pipeline, as deployed: a gateway resumed from SIGSTOP answers its overdue requests from
# the outbox (a 200 all the same), and only the relay brings those events to the ledger.
pipeline = pipeline_fixture()


async def test_gateway_sigkilled_twice_every_event_once(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    total, kills_at = 20_000, (5_000, 12_000)
    site, key = await new_site(pool)
    results: dict[str, Result] = {}
    client = AsyncClient(
        pipeline.url,
        key,
        spill_path=str(tmp_path / "spill"),
        receipts=False,
        on_result=lambda r: results.__setitem__(r.event_id, r),
        backoff=Backoff(base_s=0.05, cap_s=0.5),
    )

    killed_at: list[int] = []

    async def chaos() -> None:
        for at in kills_at:
            while len(results) < at:
                await asyncio.sleep(0.01)
            killed_at.append(len(results))
            await pipeline.kill_restart("gateway")  # SIGKILL with requests in flight, back on the same port

    killer = asyncio.create_task(chaos())
    async with client:
        for i in range(0, total, 500):
            await client.wait_pending(2_000)  # keep requests flowing while the gateway dies
            await client.send_many(numbered(i, i + 500))
        assert await client.flush(120), client.counters
        await asyncio.wait_for(killer, 60)
    assert client.counters.failures > 0  # the kills did hit requests in flight
    assert len(killed_at) == 2 and max(killed_at) < total  # both mid-stream
    assert len(results) == total and {r.status for r in results.values()} <= STORED
    count = await wait_ledger(pool, site, total)
    assert count.exactly_once(total), count
    assert await ledger_event_ids(pool, site) == set(results)


PRODUCER = Path(__file__).with_name("client_producer.py")


def _producer(url: str, key: str, spill: Path, total: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("client_producer.py")),
            url,
            key,
            str(spill),
            str(total),
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # client_support imports tests.support
    )


def _lines(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]


async def test_producer_sigkilled_mid_stream_replays_its_spill(
    pool: asyncpg.Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    total = 10_000
    site, key = await new_site(pool)
    spill, log = tmp_path / "producer.spill", tmp_path / "producer.log"
    first = _producer(pipeline.url, key, spill, total, log)
    while not any(x.get("handed_over", 0) >= 3_000 for x in _lines(log)):
        assert first.poll() is None, log.read_text()
        await asyncio.sleep(0.02)
    # Freeze the gateway so requests are in flight and events wait in the spill, then kill the
    # producer: some of those requests complete at the gateway after their sender died.
    pipeline.gateway.signal(signal.SIGSTOP)
    await asyncio.sleep(0.3)  # the test: requests pile up in flight while the gateway is frozen
    first.kill()
    first.wait(10)
    pipeline.gateway.signal(signal.SIGCONT)
    before = _lines(log)
    # The checkpoint the dead producer committed: its last progress line may lag it by a chunk
    # (the spill commits, then the line is printed; the kill can fall between the two).
    with sqlite3.connect(f"file:{spill}?mode=ro", uri=True) as db:
        checkpoint = int(db.execute("SELECT value FROM meta WHERE key = 'next'").fetchone()[0])
    assert before[-1]["handed_over"] <= checkpoint <= before[-1]["handed_over"] + 250
    second = _producer(pipeline.url, key, spill, total, log)
    assert await asyncio.to_thread(second.wait, 120) == 0, log.read_text()
    after = _lines(log)[len(before) :]
    assert after[0]["replaying"] > 0  # the restart had unacknowledged events to replay
    assert after[0]["started"] == checkpoint  # continues where the checkpoint says
    assert after[-1]["done"] is True and after[-1]["rejected"] == 0
    count = await wait_ledger(pool, site, total)
    assert count.exactly_once(total), count


def _send(url: str, settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [OPSMANTIK, "send", *args, "--url", url, "--json"],
        env=env_for(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )


async def _finish(p: subprocess.Popen[bytes]) -> tuple[int, dict, str]:
    out, err = await asyncio.to_thread(p.communicate, timeout=120)
    return p.returncode, (json.loads(out) if out.strip() else {}), err.decode()


async def _handed_over(spill: Path, lines: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the running `opsmantik send` has handed `lines` lines to its client (its spill's
    checkpoint, read from here: SQLite readers do not take the writer's lock)."""
    while True:
        assert proc.poll() is None, "opsmantik send ended before it could be interrupted"
        try:
            with sqlite3.connect(f"file:{spill}?mode=ro", uri=True) as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'line'").fetchone()
            if row is not None and int(row[0]) >= lines:
                return
        except sqlite3.OperationalError:
            pass  # not created yet
        await asyncio.sleep(0.005)


async def test_opsmantik_send_interrupted_resumes_without_billing_twice(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    total = 40_000
    site, key = await new_site(pool)
    data = tmp_path / "backfill.ndjson"
    with data.open("wb") as f:
        for e in numbered(0, total):
            f.write(_json.dumps(e) + b"\n")
        f.write(b'{"type": "api_call"}\n')  # no occurred_at: the gateway rejects this one (400)
    rejected = tmp_path / "rejected.ndjson"
    args = (str(data), "--key", key, "--rejected", str(rejected))
    first = _send(pipeline.url, settings, *args)
    await _handed_over(Path(str(data) + ".opsmantik-spill"), 3_000, first)
    pipeline.gateway.signal(signal.SIGSTOP)
    await asyncio.sleep(0.5)  # the test: requests pile up in flight while the gateway is frozen
    first.send_signal(signal.SIGINT)  # Ctrl-C with requests in flight
    rc, summary, err = await _finish(first)
    pipeline.gateway.signal(signal.SIGCONT)
    assert rc == 130 and summary["interrupted"], err
    assert summary["left_in_spill"] > 0 and "run the same command again" in err

    rc, again, err = await _finish(_send(pipeline.url, settings, *args))
    assert rc == 1, err  # one event was rejected
    assert again["replayed_from_spill"] == summary["left_in_spill"]
    assert again["resumed_at_line"] == summary["lines_read"]
    assert again["rejected"] == 1 and again["outcomes"].get("accepted", 0) > 0
    assert json.loads(rejected.read_text().splitlines()[0])["type"] == "api_call"
    count = await wait_ledger(pool, site, total)
    assert count.exactly_once(total), count

    rc, third, err = await _finish(_send(pipeline.url, settings, *args))  # run once more: nothing re-billed
    assert rc == 0 and third["events"] == 0 and third["lines_read"] == total + 1, err
    assert (await ledger_by_seq(pool, site)).exactly_once(total)


async def test_opsmantik_send_bad_key_and_no_gateway(
    settings: Settings, pipeline: Pipeline, tmp_path: Path
) -> None:
    data = tmp_path / "one.ndjson"
    data.write_bytes(_json.dumps(numbered(0, 1)[0]) + b"\n")
    rc, _, err = await _finish(_send(pipeline.url, settings, str(data), "--key", "omk_" + "x" * 30))
    assert rc == 2 and "refused the key" in err
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    rc, _, err = await _finish(_send(dead, settings, str(data), "--key", "omk_" + "x" * 30))
    assert rc == 3 and "opsmantik gateway" in err


async def test_a_request_of_exactly_one_mebibyte_is_accepted(
    pool: asyncpg.Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    site, key = await new_site(pool)
    for extra, name in ((0, "exact"), (1, "one byte more")):
        events = [
            {**e, "event_id": f"mib-{extra}-{i:04d}", "properties": {"seq": i, "pad": ""}}
            for i, e in enumerate(numbered(0, 80))
        ]
        # pad the events so the request is exactly 1 MiB (+ extra bytes); each stays < 16 KiB
        room = (
            GATEWAY_MAX_BYTES - ENVELOPE_BYTES - (len(events) - 1) - sum(len(_json.dumps(e)) for e in events)
        )
        pads = [room // len(events)] * len(events)
        pads[0] += room - sum(pads) + extra
        for e, pad in zip(events, pads, strict=True):
            e["properties"]["pad"] = "x" * pad
        assert len(encode_batch([_json.dumps(e) for e in events])) == GATEWAY_MAX_BYTES + extra
        async with AsyncClient(
            pipeline.url, key, spill_path=str(tmp_path / f"s{extra}"), max_in_flight=1
        ) as c:
            tickets = await c.send_many(events)
            assert await c.flush(30)
            results = [await t for t in tickets]
        assert {r.status for r in results} <= STORED, (name, results[0])
        # exactly 1 MiB goes as one request; one byte more and the client makes two
        assert c.counters.requests == 1 + extra, name


async def test_opsmantik_send_from_stdin_and_again_sends_nothing(
    settings: Settings, pool: asyncpg.Pool, pipeline: Pipeline, tmp_path: Path
) -> None:
    total = 500
    site, key = await new_site(pool)
    data = b"".join(_json.dumps(e) + b"\n" for e in numbered(0, total))
    spill = str(tmp_path / "stdin.spill")
    for expected in (total, 0):  # the second run: same input, the spill says it was all sent
        p = subprocess.Popen(
            [OPSMANTIK, "send", "-", "--url", pipeline.url, "--key", key, "--json", "--spill", spill],
            env=env_for(settings),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        out, err = await asyncio.to_thread(p.communicate, data, 60)
        assert p.returncode == 0, err.decode()
        assert json.loads(out)["events"] == expected
    count = await wait_ledger(pool, site, total)
    assert count.exactly_once(total), count
