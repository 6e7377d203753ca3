"""Alert rules per site: the built-ins (80 % and 100 % of the monthly quota, the hard cap) and
meter thresholds per billing period (`opsmantik alerts create|list|delete`, docs/alerts.md).

A rule is checked in full at create: the site exists and has the quota or cap the built-in
reads, the meter exists and is additive (COUNT or SUM: a period's total is exact and kept as a
running sum, docs/alerts.md "Deciding a crossing"), the threshold is a positive decimal, the URL
passes opsmantik.alerts.urls. The signing secret is returned once (it is not stored).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

import asyncpg

from opsmantik.alerts import signing, urls
from opsmantik.db.queries import package_queries
from opsmantik.errors import NotFound, Refused, UnknownArgument, UsageError

Q = package_queries("opsmantik.alerts", "rules.sql")
BUILTINS = ("quota-80", "quota-100", "hard-cap")  # CLI names; stored as quota_80, quota_100, hard_cap
ADDITIVE = ("COUNT", "SUM")
MAX_RULES_PER_SITE = 100
MAX_THRESHOLD = Decimal(10) ** 15  # the meters' value range (docs/meters.md)


@dataclass(frozen=True)
class NewRule:
    rule_id: uuid.UUID
    site_id: uuid.UUID
    kind: str
    meter: str | None
    threshold: Decimal | None
    url: str
    secret: str  # whsec_…: shown once
    created_at: datetime


@dataclass(frozen=True)
class RuleRow:
    rule_id: uuid.UUID
    site_id: uuid.UUID
    kind: str
    meter: str | None
    threshold: Decimal | None
    url: str
    created_at: datetime
    pending: int
    delivered: int
    parked: int


def parse_threshold(raw: str) -> Decimal:
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise UsageError(f"--threshold {raw[:40]!r}: a decimal number") from None
    if not value.is_finite() or value <= 0 or value > MAX_THRESHOLD:
        raise UsageError(f"--threshold {raw[:40]!r}: greater than 0 and at most 10^15")
    return value


async def create(
    conn: asyncpg.Connection,
    master: str,
    policy: urls.UrlPolicy,
    site_id: uuid.UUID,
    url: str,
    *,
    builtin: str | None = None,
    meter: str | None = None,
    threshold: Decimal | None = None,
) -> NewRule:
    """A new rule; UsageError (or a subclass) names the argument to fix."""
    if (builtin is None) == (meter is None):
        raise UsageError("give either --builtin or --meter with --threshold")
    if meter is not None and threshold is None:
        raise UsageError("--meter needs --threshold")
    if builtin is not None and threshold is not None:
        raise UsageError("--threshold goes with --meter (a built-in's line is the site's quota or cap)")
    await urls.validate(url, policy)
    async with conn.transaction():
        limits = await conn.fetchrow(Q["site_limits"], site_id)
        if limits is None:
            raise UnknownArgument(f"--site {site_id}: no such site")
        meter_id = None
        kind = "meter"
        if builtin is not None:
            if builtin not in BUILTINS:
                raise UsageError(f"--builtin: one of {', '.join(BUILTINS)}")
            kind = builtin.replace("-", "_")
            needed = "hard_cap" if kind == "hard_cap" else "monthly_quota"
            if limits[needed] is None:
                raise Refused(f"--builtin {builtin}: site {site_id} has no {needed.replace('_', ' ')}")
        else:
            row = await conn.fetchrow(Q["meter_for_rule"], meter)
            if row is None:
                raise UnknownArgument(f"--meter {meter}: no such meter (opsmantik meters list)")
            if row["aggregation"] not in ADDITIVE:
                raise Refused(
                    f"--meter {meter}: a {row['aggregation']} meter; thresholds are on COUNT or SUM meters"
                )
            meter_id = row["meter_id"]
        await conn.execute(Q["lock_site_rules"], site_id)
        if await conn.fetchval(Q["count_site_rules"], site_id) >= MAX_RULES_PER_SITE:
            raise Refused(f"--site {site_id}: at most {MAX_RULES_PER_SITE} rules per site (delete one first)")
        salt = os.urandom(16)
        row = await conn.fetchrow(Q["insert_rule"], site_id, kind, meter_id, threshold, url, salt)
    key = signing.rule_key(master, row["rule_id"], salt)
    return NewRule(
        row["rule_id"], site_id, kind, meter, threshold, url, signing.secret_text(key), row["created_at"]
    )


async def list_rules(conn: asyncpg.Connection, site_id: uuid.UUID | None) -> list[RuleRow]:
    return [RuleRow(*r) for r in await conn.fetch(Q["list_rules"], site_id)]


async def delete(conn: asyncpg.Connection, rule_id: uuid.UUID) -> None:
    """The rule, its state and its undelivered webhooks (a webhook in flight may still arrive)."""
    if await conn.fetchval(Q["delete_rule"], rule_id) is None:
        raise NotFound(f"no alert rule {rule_id}")
