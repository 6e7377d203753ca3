"""`python -m tests.bench.alerts_decide [--calls N] [--batch N]`: what `crossings.decide` costs the
worker per batch, with no rule and with 100 (the three quota built-ins and 97 thresholds on the
`events` and `quantity` meters, never reached), in the steady state (every rule's state exists).

A Postgres of its own (tests/support/stacks.py: free port, removed after; no Kafka), every
migration, two sites with the same quota and cap. Each call is the worker's shape: in a
transaction, the invoice row advanced by the batch, then `decide` with the batch's meter
increments. Client CPU (time.process_time: the Python side, asyncpg's encoding and decoding) and
wall per call, two rounds of each, interleaved. Another checkout's code: run it with that
checkout's `services/` first on PYTHONPATH (the before/after of docs/benchmarks.md "Usage alerts").
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg
from opsmantik.alerts import crossings, rules
from opsmantik.alerts.urls import UrlPolicy
from opsmantik.config import LOCAL_ALERTS_SECRET
from opsmantik.db.migrate import migrate
from opsmantik.meters import aggregate
from opsmantik.sites import create_site

from tests.support.stacks import private_stack

URL = "http://127.0.0.1:9/never-called"


async def measure(dsn: str, calls: int, batch: int) -> dict[str, list[tuple[float, float]]]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        month = datetime.now(UTC).date().replace(day=1)
        meters = {r["slug"]: r["meter_id"] for r in await conn.fetch("SELECT slug, meter_id FROM meters")}
        sites = {}
        for name in ("none", "rules"):
            site = await create_site(conn, f"decide-{name}", monthly_quota=10**12, hard_cap=10**12)
            sites[name] = site.site_id
            await conn.execute(
                "INSERT INTO site_usage_monthly (site_id, month, events, quantity) VALUES ($1, $2, 0, 0)",
                site.site_id,
                month,
            )
        policy = UrlPolicy(allow_http=True, allow_private=True)
        for b in rules.BUILTINS:
            await rules.create(conn, LOCAL_ALERTS_SECRET, policy, sites["rules"], URL, builtin=b)
        for k in range(rules.MAX_RULES_PER_SITE - len(rules.BUILTINS)):
            slug = ("events", "quantity")[k % 2]
            await rules.create(
                conn,
                LOCAL_ALERTS_SECRET,
                policy,
                sites["rules"],
                URL,
                meter=slug,
                threshold=Decimal(10**12 + k),
            )
        minute = datetime.now(UTC).replace(second=0, microsecond=0)

        def increments(site: object) -> aggregate.Increments:
            inc = aggregate.Increments()
            for slug in ("events", "quantity"):
                b = inc.bucket((meters[slug], site, minute, month, "", "{}"))  # type: ignore[arg-type]
                b.n, b.total = batch, Decimal(batch)
            return inc

        async def one(site: object, period: date) -> tuple[float, float]:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE site_usage_monthly SET events = events + $3 WHERE site_id = $1 AND month = $2",
                    site,
                    period,
                    batch,
                )
                c0, w0 = time.process_time(), time.perf_counter()
                await crossings.decide(conn, {(site, period)}, increments(site))  # type: ignore[arg-type]
                return time.process_time() - c0, time.perf_counter() - w0

        for site in sites.values():  # the first call seeds the states (once a month in production)
            await one(site, month)
        out: dict[str, list[tuple[float, float]]] = {"none": [], "rules": []}
        for _ in range(2):
            for name, site in sites.items():
                cpu = wall = 0.0
                for _ in range(calls):
                    c, w = await one(site, month)
                    cpu, wall = cpu + c, wall + w
                out[name].append((cpu / calls * 1e6, wall / calls * 1e6))
        return out
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.alerts_decide", description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="decide calls per round and site")
    parser.add_argument("--batch", type=int, default=1000, help="events per simulated batch")
    args = parser.parse_args()
    with private_stack("alerts-decide") as stack:
        stack.pg_up()
        result = asyncio.run(measure(stack.database_url, args.calls, args.batch))
    print(f"crossings.decide per batch ({crossings.__file__}), {args.calls} calls a round:")
    for name, rounds in result.items():
        label = "0 rules" if name == "none" else "100 rules"
        print(f"  {label:9}  " + "; ".join(f"CPU {c:,.0f} µs, wall {w:,.0f} µs" for c, w in rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
