"""The eleven fault scenarios and the run that wraps each one:

  fresh pipeline → warm-up under load → fault → recovery under load → stop load
  → drain (ledger ⊇ acknowledged, outbox empty) → checker → one table row

A fault is an async function of a `FaultContext`; blocking engine operations go through
`asyncio.to_thread` so the load keeps flowing while Kafka restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.chaos import checker
from tests.chaos.checker import Verdict, Window
from tests.chaos.harness import OPSMANTIK, ChaosStack, Component, HarnessError, Pipeline, wait_http_ready
from tests.chaos.loadgen import LoadConfig, LoadGenerator

READY_TIMEOUT_S = 90.0
BOTH_DOWN_GRACE_S = 5.0  # after both engines are back, the gateway may need a moment to see it
PG_FREEZE_S = 15.0  # scenario 10: Postgres SIGSTOPped this long, then SIGKILLed
PG_DEAD_S = 3.0  # ... and left dead this long before the restart
MIN_200_SHARE = 0.99  # scenario 10: the gateway answers known keys from memory and Kafka


@dataclass(frozen=True)
class Profile:
    fault_s: float = 10.0
    warmup_s: float = 3.0
    recovery_s: float = 5.0
    drain_timeout_s: float = 120.0
    repeat_kills_s: float = 60.0
    events_per_s: float = 150.0
    clients: int = 4


@dataclass
class FaultContext:
    engines: ChaosStack
    pipeline: Pipeline
    site_id: str
    rng: random.Random
    profile: Profile
    both_down: list[Window] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Windows in which at least MIN_200_SHARE of the attempts must be 200s (the run fails otherwise).
    must_serve: list[tuple[str, Window]] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def restart(self, c: Component) -> None:
        await asyncio.to_thread(c.start)
        if c.kind == "gateway":
            await wait_http_ready(self.pipeline.gateway_urls[c.index], READY_TIMEOUT_S)

    async def outbox_depth(self) -> int:
        try:
            _, depth = await checker.ledger_progress(self.pipeline.database_url, self.site_id)
            return depth
        except (OSError, TimeoutError, Exception):  # noqa: BLE001 - the DB may be the fault
            return -1


Fault = Callable[[FaultContext], Awaitable[None]]


# ---------------------------------------------------------------- the faults


async def broker_kill(ctx: FaultContext) -> None:
    await asyncio.to_thread(ctx.engines.kill_kafka)
    await ctx.sleep(ctx.profile.fault_s)
    await asyncio.to_thread(ctx.engines.start_kafka)


async def broker_freeze(ctx: FaultContext) -> None:
    ctx.engines.stop_kafka()
    try:
        await ctx.sleep(ctx.profile.fault_s)
    finally:
        ctx.engines.cont_kafka()


async def postgres_stop(ctx: FaultContext) -> None:
    await asyncio.to_thread(ctx.engines.stop_pg)
    await ctx.sleep(ctx.profile.fault_s)
    await asyncio.to_thread(ctx.engines.start_pg)


async def worker_kill(ctx: FaultContext) -> None:
    # Under steady load the worker is always mid-batch; the seed picks the moment.
    await ctx.sleep(ctx.rng.uniform(0.0, 1.0))
    await asyncio.to_thread(ctx.pipeline.workers[0].kill)
    await ctx.sleep(ctx.rng.uniform(1.0, 3.0))
    await ctx.restart(ctx.pipeline.workers[0])
    await ctx.sleep(ctx.profile.fault_s)


SLOW_DRAIN = ("OPSMANTIK_RELAY_BATCH", "25")


async def relay_kill(ctx: FaultContext) -> None:
    """Fill the outbox (broker down, relay stopped), bring the broker back, start the relay and
    SIGKILL it as soon as it has begun draining; then restart it."""
    relay = ctx.pipeline.relays[0]
    await asyncio.to_thread(relay.kill)
    await asyncio.to_thread(ctx.engines.kill_kafka)
    await ctx.sleep(ctx.profile.fault_s)
    await asyncio.to_thread(ctx.engines.start_kafka)
    full = await ctx.outbox_depth()
    ctx.notes.append(f"outbox before relay start: {full}")
    if full <= 0:  # the fault needs a drain to interrupt
        raise HarnessError(f"scenario 5: the outbox did not fill while the broker was down (depth {full})")
    # Small rounds for the restart the kill interrupts: at the default 1,000 rows a round the
    # relay drained a 4,837-row outbox between two 20 ms depth polls (a CI run, seed 90971).
    relay.env[SLOW_DRAIN[0]] = SLOW_DRAIN[1]
    await ctx.restart(relay)
    deadline = time.monotonic() + 30
    draining = False
    while not draining and time.monotonic() < deadline:
        depth = await ctx.outbox_depth()
        draining = 0 <= depth < full
        if not draining:
            await asyncio.sleep(0.02)
    if not draining:
        raise HarnessError("scenario 5: the restarted relay did not start draining within 30 s")
    await asyncio.to_thread(relay.kill)
    left = await ctx.outbox_depth()
    ctx.notes.append(f"outbox when relay killed: {left}")
    if left == 0:
        raise HarnessError(
            "scenario 5: the relay drained the whole outbox before the kill (not killed while draining)"
        )
    await ctx.sleep(ctx.rng.uniform(1.0, 3.0))
    del relay.env[SLOW_DRAIN[0]]  # the restart after the fault drains at the default rounds
    await ctx.restart(relay)


async def gateway_kill(ctx: FaultContext) -> None:
    await ctx.sleep(ctx.rng.uniform(0.0, 1.0))
    gw = ctx.pipeline.gateways[0]
    await asyncio.to_thread(gw.kill)
    await ctx.sleep(ctx.rng.uniform(1.0, 3.0))
    await ctx.restart(gw)
    await ctx.sleep(ctx.profile.fault_s)


async def both_down(ctx: FaultContext) -> None:
    start = time.monotonic()
    await asyncio.gather(asyncio.to_thread(ctx.engines.kill_kafka), asyncio.to_thread(ctx.engines.stop_pg))
    await ctx.sleep(ctx.profile.fault_s)
    await asyncio.gather(asyncio.to_thread(ctx.engines.start_pg), asyncio.to_thread(ctx.engines.start_kafka))
    ctx.both_down.append(Window(start, time.monotonic() + BOTH_DOWN_GRACE_S))


async def postgres_freeze_then_kill(ctx: FaultContext) -> None:
    """Postgres hangs (every process SIGSTOPped) for 15 s, is SIGKILLed, stays dead 3 s, then
    restarts with crash recovery; Kafka stays up. Known keys are cached and the Kafka path needs
    no database: the gateway keeps answering 200 in every window, while the worker, relay and
    audit must wait for Postgres and resume on their own."""
    t0 = time.monotonic()
    pids = await asyncio.to_thread(ctx.engines.freeze_pg)
    if not pids:
        raise HarnessError("scenario 10: no Postgres process to freeze")
    ctx.notes.append(f"froze {len(pids)} postgres processes")
    try:
        await ctx.sleep(PG_FREEZE_S)
    finally:
        t1 = time.monotonic()
        await asyncio.to_thread(ctx.engines.kill_pg, pids)
    ctx.must_serve.append(("frozen", Window(t0, t1)))
    await ctx.sleep(PG_DEAD_S)
    await asyncio.to_thread(ctx.engines.start_pg)
    t2 = time.monotonic()
    ctx.must_serve.append(("killed, restarting", Window(t1, t2)))
    ctx.notes.append(f"postgres dead + crash recovery: {t2 - t1:.1f} s")
    await ctx.sleep(ctx.profile.recovery_s)
    ctx.must_serve.append(("after the restart", Window(t2, time.monotonic())))


async def postgres_freeze_and_broker_kill(ctx: FaultContext) -> None:
    """Both engines gone, Postgres hung rather than refusing: 503s (retry is safe), never a 200
    whose events are lost."""
    start = time.monotonic()
    pids = await asyncio.to_thread(ctx.engines.freeze_pg)
    await asyncio.to_thread(ctx.engines.kill_kafka)
    try:
        await ctx.sleep(ctx.profile.fault_s)
    finally:
        await asyncio.to_thread(ctx.engines.thaw_pg, pids)
    await asyncio.to_thread(ctx.engines.start_kafka)
    ctx.both_down.append(Window(start, time.monotonic() + BOTH_DOWN_GRACE_S))


async def broker_kill_loop(ctx: FaultContext) -> None:
    end = time.monotonic() + ctx.profile.repeat_kills_s
    kills = 0
    while time.monotonic() < end:
        await asyncio.to_thread(ctx.engines.kill_kafka)
        kills += 1
        await ctx.sleep(ctx.rng.uniform(1.0, 4.0))
        await asyncio.to_thread(ctx.engines.start_kafka)
        await ctx.sleep(ctx.rng.uniform(1.0, 4.0))
    ctx.notes.append(f"broker kills: {kills}")


async def kill_one_of_each(ctx: FaultContext) -> None:
    p = ctx.pipeline
    victims = [ctx.rng.choice(p.gateways), ctx.rng.choice(p.workers), ctx.rng.choice(p.relays)]
    ctx.notes.append("killed " + ", ".join(v.name for v in victims))
    await asyncio.gather(*(asyncio.to_thread(v.kill) for v in victims))
    await ctx.sleep(ctx.profile.fault_s)
    for v in victims:
        await ctx.restart(v)


@dataclass(frozen=True)
class Scenario:
    number: int
    title: str
    fault: Fault
    topology: tuple[int, int, int] = (1, 1, 1)  # gateways, workers, relays


SCENARIOS: dict[int, Scenario] = {
    s.number: s
    for s in [
        Scenario(1, "broker SIGKILL, restart after 10 s", broker_kill),
        Scenario(2, "broker SIGSTOP 10 s, SIGCONT", broker_freeze),
        Scenario(3, "PostgreSQL stopped 10 s", postgres_stop),
        Scenario(4, "worker SIGKILL mid-batch, restart", worker_kill),
        Scenario(5, "relay SIGKILL while draining, restart", relay_kill),
        Scenario(6, "gateway SIGKILL in flight, restart", gateway_kill),
        Scenario(7, "broker + PostgreSQL down together", both_down),
        Scenario(8, "broker killed every few s for a minute", broker_kill_loop),
        Scenario(9, "2 gw / 2 workers / 2 relays, kill one each", kill_one_of_each, (2, 2, 2)),
        Scenario(10, "PostgreSQL SIGSTOP 15 s, SIGKILL, restart (Kafka up)", postgres_freeze_then_kill),
        Scenario(11, "PostgreSQL SIGSTOP + broker SIGKILL together", postgres_freeze_and_broker_kill),
    ]
}
CI_SUBSET = (1, 4, 5, 6)


# ---------------------------------------------------------------- one run


@dataclass
class RunResult:
    scenario: int
    title: str
    seed: int
    verdict: Verdict | None
    drain_s: float | None
    p95_fault_ms: float | None
    crashes: dict[str, int]
    notes: list[str]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.verdict is not None and self.verdict.passed

    @property
    def failures(self) -> list[str]:
        if self.error:
            return [self.error]
        return self.verdict.failures if self.verdict else []


async def _supervise(pipeline: Pipeline, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.to_thread(pipeline.supervise)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def _wait_first_rows(pipeline: Pipeline, site_id: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ids, _ = await checker.ledger_progress(pipeline.database_url, site_id)
            if ids:
                return True
        except Exception:  # noqa: BLE001 - keep polling until the deadline
            pass
        await asyncio.sleep(0.5)
    return False


async def _drain(pipeline: Pipeline, site_id: str, acked: set[str], timeout_s: float) -> float | None:
    """Seconds until every acknowledged event is in the ledger and the outbox is empty."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            ids, depth = await checker.ledger_progress(pipeline.database_url, site_id)
            if acked <= ids and depth == 0:
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - the database may still be coming back
            pass
        await asyncio.sleep(0.25)
    return None


async def run_scenario(
    engines: ChaosStack,
    scenario: Scenario,
    seed: int,
    profile: Profile,
    workroot: Path,
    keep_logs: bool = True,
) -> RunResult:
    name = f"s{scenario.number}_{seed}"
    pipeline = Pipeline(engines, name, workroot / name)
    rng = random.Random(f"{seed}:{scenario.number}")
    result = RunResult(scenario.number, scenario.title, seed, None, None, None, {}, [])
    await asyncio.to_thread(engines.up)  # a previous scenario's fault must not leak into this one
    site = await pipeline.create()
    ctx = FaultContext(engines, pipeline, site.site_id, rng, profile)
    stop_supervisor = asyncio.Event()
    supervisor: asyncio.Task[None] | None = None
    load: LoadGenerator | None = None
    try:
        g, w, r = scenario.topology
        await asyncio.to_thread(pipeline.start, g, w, r)
        for url in pipeline.gateway_urls:
            if not await wait_http_ready(url, READY_TIMEOUT_S):
                raise HarnessError(f"gateway {url} not ready:\n{pipeline.gateways[0].log_tail()}")
        supervisor = asyncio.create_task(_supervise(pipeline, stop_supervisor))
        load = LoadGenerator(
            LoadConfig(site.api_key, pipeline.gateway_urls, seed, profile.clients, profile.events_per_s)
        )
        await load.start()
        if not await _wait_first_rows(pipeline, site.site_id, READY_TIMEOUT_S):
            raise HarnessError(
                "no event reached the ledger during warm-up:\n" + pipeline.workers[0].log_tail()
            )
        await asyncio.sleep(profile.warmup_s)
        fault_start = time.monotonic()
        await scenario.fault(ctx)
        fault_window = Window(fault_start, time.monotonic())
        await asyncio.sleep(profile.recovery_s)
        record = await load.stop()
        load = None
        drain_s = await _drain(pipeline, site.site_id, set(record.acked), profile.drain_timeout_s)
        env = pipeline.env
        month = datetime.now(UTC).strftime("%Y-%m")
        reconcile = await asyncio.to_thread(checker.run_reconcile, [OPSMANTIK], env, month)
        state = await checker.read_ledger_state(pipeline.database_url, site.site_id)
        topic = await asyncio.to_thread(
            checker.read_topic, engines.stack.kafka_bootstrap, env["OPSMANTIK_TOPIC"], site.site_id
        )
        audit = await asyncio.to_thread(checker.run_audit, [OPSMANTIK], env, month, site.site_id)
        verdict = checker.evaluate(record, state, reconcile, ctx.both_down, topic, audit)
        if drain_s is None:
            verdict.failures.append(f"did not drain within {profile.drain_timeout_s:.0f} s")
        for label, window in ctx.must_serve:
            inside = [a for a in record.attempts if window.contains(a.t)]
            ok = sum(a.kind == "200" for a in inside)
            share = ok / len(inside) if inside else 0.0
            ctx.notes.append(f"{label}: {ok}/{len(inside)} attempts 200 ({share:.2%})")
            if share < MIN_200_SHARE:
                verdict.failures.append(
                    f"{label}: {share:.2%} of {len(inside)} attempts were 200 (< {MIN_200_SHARE:.0%})"
                )
        lat = checker.p95(checker.latencies_in(record.attempts, fault_window))
        result.verdict, result.drain_s = verdict, drain_s
        result.p95_fault_ms = lat * 1000 if lat is not None else None
        if record.unacked_at_end:
            ctx.notes.append(f"{record.unacked_at_end} batches never acknowledged (sent, not counted)")
    except (HarnessError, OSError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if load is not None:
            await load.stop(grace_s=1.0)
        stop_supervisor.set()
        if supervisor is not None:
            await supervisor
        result.crashes = pipeline.crash_report()
        result.notes = ctx.notes + pipeline.crash_notes()
        await asyncio.to_thread(pipeline.stop)
        await asyncio.to_thread(engines.up)
        if result.passed and not keep_logs:
            await pipeline.drop()
    return result
