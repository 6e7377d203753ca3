"""The observability pieces against a running stack (a private Kafka + Postgres on 28092/28432, so
the shared one is never touched; gateway, worker and relay as real processes):

- `promtool check metrics` over each process's live /metrics;
- Debian's Prometheus scraping them with our rules: every Grafana panel's query parses and returns
  data (Grafana itself cannot be installed here: docs/operations.md);
- headless Chromium renders /status at 1280 and 390 px with every component and SLO on it, light
  and dark; then the broker is stopped and the first refresh after that shows the outage.
Screenshots are kept in .local/artifacts/status-page/ (docs/operations.md shows copies)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
import yaml
from opsmantik.config import Settings
from opsmantik.db.migrate import migrate
from opsmantik.devstack.stack import Stack
from opsmantik.kafka.topics import ensure_topics
from opsmantik.sites import create_site_with_key

from tests.observability import chromium
from tests.observability.promtool import PROM, ROOT, RULES, binary, promtool
from tests.support.gateway import auth, event
from tests.support.pipeline import Pipeline
from tests.support.process import Process, free_port
from tests.support.stacks import new_stack, remove

pytestmark = [pytest.mark.integration, pytest.mark.own_stack]
ARTIFACTS = ROOT / ".local" / "artifacts" / "status-page"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "opsmantik-slo.json"
REFRESH_S = 1.0


@dataclass
class Live:
    stack: Stack
    settings: Settings
    pipeline: Pipeline
    api_key: str
    logs: Path

    @property
    def base(self) -> str:
        return self.pipeline.url

    def metrics_ports(self) -> dict[str, int]:
        """Each process's /metrics port (the gateway serves it on its own port)."""
        env = self.pipeline.env
        return {
            "gateway": self.pipeline.gateway_port,
            **{name: int(env[f"{name}_metrics_port"]) for name in ("worker", "relay", "audit")},  # type: ignore[call-overload]
        }


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own local URL
        return r.read()


def wait(check, timeout_s: float, what: str, every_s: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
async def live(base_settings: Settings) -> AsyncIterator[Live]:
    stack = new_stack("observability")  # a private stack on free ports
    pipeline: Pipeline | None = None
    try:
        await asyncio.to_thread(stack.up)
        s = dataclasses.replace(
            base_settings,
            database_url=stack.database_url,
            kafka_bootstrap=stack.kafka_bootstrap,
            topic="obs.ingest.v1",
            billable_topic="obs.billable.v1",
            topic_partitions=2,
            worker_group="obs-worker",
        )
        conn = await asyncpg.connect(s.database_url)
        try:
            await migrate(conn)
            key = (await create_site_with_key(conn, "observability", rate=1e6, burst=1_000_000)).api_key
        finally:
            await conn.close()
        await asyncio.to_thread(ensure_topics, s)
        logs = stack.home / "logs"
        logs.mkdir()
        # status_window_s 10: a worker's slow first batches (group join) must not keep the page
        # "degraded" for the default 5 minutes of window
        env = {
            "status_refresh_s": REFRESH_S,
            "status_slo_refresh_s": 2,
            "status_probe_timeout_s": 1,
            "status_window_s": 10,
            "reconcile_interval_s": 2,
        }
        pipeline = await asyncio.to_thread(Pipeline.start, s, logs, **env)  # gateway /healthz answered
        for name in ("worker", "relay", "audit"):
            url = pipeline.metrics_url(name)
            await asyncio.to_thread(wait, lambda u=url: http_get(u), 60, f"{name} up ({pipeline[name].log})")
        yield Live(stack, s, pipeline, key, logs)
    finally:
        if pipeline is not None:
            pipeline.stop()
        await asyncio.to_thread(stack.down)
        remove(stack)


async def send_traffic(live: Live, seconds: float) -> int:
    """Events (and a few usage reads) at a gentle pace; returns the number of 200s."""
    ok = 0
    month = datetime.now(UTC).strftime("%Y-%m")
    async with aiohttp.ClientSession() as http:
        stop = time.monotonic() + seconds
        i = 0
        while time.monotonic() < stop:
            body = orjson.dumps({"events": [event() for _ in range(5)]})
            async with http.post(f"{live.base}/api/sync", data=body, headers=auth(live.api_key)) as r:
                ok += r.status == 200
            if i % 10 == 0:
                async with http.get(f"{live.base}/api/usage?month={month}", headers=auth(live.api_key)) as r:
                    assert r.status == 200
            i += 1
            await asyncio.sleep(0.05)  # the pace of the traffic (the test), not a wait
    return ok


# ---------------------------------------------------------------- metrics and Prometheus


def test_promtool_check_metrics_on_each_process(live: Live) -> None:
    for name, port in live.metrics_ports().items():
        text = http_get(f"http://127.0.0.1:{port}/metrics")
        assert b"opsmantik_" in text, name
        run = promtool("check", "metrics", stdin=text)
        assert run.returncode == 0 and not run.stdout.strip(), f"{name}: {run.stdout}{run.stderr}"


@pytest.fixture(scope="module")
def prometheus(live: Live) -> Iterator[str]:
    """Debian's Prometheus with the shipped config's jobs (targets pointed at this stack) and rules."""
    work = Path(tempfile.mkdtemp(prefix="opsmantik-prometheus-"))
    shipped = yaml.safe_load((PROM / "prometheus.yml").read_text())
    ports = {f"opsmantik-{name}": port for name, port in live.metrics_ports().items()}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": j["job_name"],
                "static_configs": [{"targets": [f"127.0.0.1:{ports[j['job_name']]}"]}],
            }
            for j in shipped["scrape_configs"]
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary("prometheus"),
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    proc = Process("prometheus", argv, dict(os.environ), work / "prometheus.log", cwd=work).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: http_get(f"{url}/-/ready"), 30, "prometheus ready")
        yield url
    finally:
        proc.stop(10)
        shutil.rmtree(work, ignore_errors=True)


def query(prom: str, expr: str) -> dict:
    body = http_get(f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    return json.loads(body)


async def test_every_dashboard_panel_returns_data_from_prometheus(live: Live, prometheus: str) -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    await send_traffic(live, 4.0)  # several scrapes with traffic between them: rates have data

    def missing() -> list[str]:
        out = []
        for title, expr in exprs:
            r = query(prometheus, expr)
            assert r["status"] == "success", (title, expr, r)  # it parses
            if not r["data"]["result"]:
                out.append(f"{title}: {expr}")
        return out

    def all_have_data() -> bool:
        return not missing()

    try:
        await asyncio.to_thread(wait, all_have_data, 40, "every panel to return data", 1.0)
    except AssertionError:
        pytest.fail("panels without data: " + "; ".join(missing()))
    # a query that does not parse is reported as such (the check above can fail)
    with pytest.raises(urllib.error.HTTPError):
        query(prometheus, "sum(rate(opsmantik_http_requests_total[1m])")
    # the rules are loaded and the burn-rate alerts are evaluated (none firing on a healthy stack)
    rules = json.loads(http_get(f"{prometheus}/api/v1/rules"))["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"] if r["type"] == "alerting"}
    assert "OpsmantikAvailabilityFastBurn" in names and "OpsmantikCaptureUnaccounted" in names
    firing = json.loads(http_get(f"{prometheus}/api/v1/alerts"))["data"]["alerts"]
    assert [a for a in firing if a["labels"]["severity"] == "P0"] == []


# ---------------------------------------------------------------- the status page in Chromium


def status_json(live: Live) -> dict:
    return json.loads(http_get(f"{live.base}/status.json"))


def shoot(live: Live, name: str, width: int, dark: bool = False) -> Path:
    height = 2400 if width > 600 else 3600
    return chromium.screenshot(f"{live.base}/status", ARTIFACTS / name, width, height, dark)


COMPONENTS = [
    "Ingest API",
    "Event queue",
    "Fallback buffer",
    "Billing ledger freshness",
    "Dashboard/usage API",
]
OBJECTIVES = [
    "Availability",
    "Latency (p95 under 500 ms)",
    "Freshness (usage within 5 s)",
    "Data integrity (zero loss)",
    "Billing accuracy",
]


async def test_status_page_in_chromium_then_broker_outage(live: Live) -> None:
    await send_traffic(live, 2.0)

    def operational() -> dict | None:
        s = status_json(live)
        return s if s["slo"]["figures_at"] and s["status"]["indicator"] == "none" else None

    snap = await asyncio.to_thread(wait, operational, 30, "an operational page with figures")
    assert snap["status"]["description"] == "All systems operational"

    for width in (1280, 390):
        html = await asyncio.to_thread(chromium.dom, f"{live.base}/status", width)
        assert "All systems operational" in html
        for name in COMPONENTS + OBJECTIVES:
            assert html.count(f">{name}<") >= 1, (width, name)
        assert "<script" not in html
        path = await asyncio.to_thread(shoot, live, f"status-{width}.png", width)
        w, _, bg = chromium.png_size_and_pixel(path, 2, 2)
        assert w == width and min(bg) > 200  # light page by default
    dark = await asyncio.to_thread(shoot, live, "status-390-dark.png", 390, True)
    assert max(chromium.png_size_and_pixel(dark, 2, 2)[2]) < 60  # prefers-color-scheme: dark

    # The outage: the broker stops. The first snapshot taken after it is gone shows it.
    await asyncio.to_thread(live.stack.kafka_down)
    stopped = datetime.now(UTC)

    def after_stop() -> dict | None:
        s = status_json(live)
        return s if datetime.fromisoformat(s["page"]["updated_at"]) > stopped else None

    first = await asyncio.to_thread(wait, after_stop, 10 * REFRESH_S + 5, "a refresh after the stop", 0.05)
    by = {c["name"]: c["status"] for c in first["components"]}
    assert by["Event queue"] == "major_outage", first["components"]
    assert by["Ingest API"] == "operational"  # events still land in the fallback buffer
    assert first["status"] == {"indicator": "major", "description": "Partial outage"}
    # still accepted, from the outbox
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{live.base}/api/sync", data=orjson.dumps(event()), headers=auth(live.api_key)) as r,
    ):
        assert r.status == 200 and (await r.json())["results"][0]["status"] == "fallback"
    for width in (1280, 390):
        html = await asyncio.to_thread(chromium.dom, f"{live.base}/status", width)
        assert "Partial outage" in html and "Major outage" in html
        await asyncio.to_thread(shoot, live, f"status-outage-{width}.png", width)

    # Postgres too: nothing can store events now. That is the page's "Major outage" (P0).
    await asyncio.to_thread(live.stack.pg_down)
    stopped = datetime.now(UTC)
    both = await asyncio.to_thread(wait, after_stop, 10 * REFRESH_S + 5, "a refresh after the 2nd stop", 0.05)
    by = {c["name"]: c["status"] for c in both["components"]}
    assert by["Ingest API"] == by["Fallback buffer"] == by["Dashboard/usage API"] == "major_outage"
    assert both["status"] == {"indicator": "critical", "description": "Major outage"}
    assert both["slo"]["objectives"], "the last known figures stay on the page"
