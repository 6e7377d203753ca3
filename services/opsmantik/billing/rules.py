"""Pure billing rules: the billing month of an event and the class of each new ledger row."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import date

from opsmantik.months import next_month

INCLUDED = "included"
OVERLIMIT = "overlimit"

InvoiceKey = tuple[uuid.UUID, date]  # (site_id, billing month)


def billing_month(usage_month: date, closed: frozenset[date]) -> date:
    """The usage month, or the first open month after it when its invoice is closed."""
    month = usage_month
    for _ in range(len(closed) + 1):  # bounded: each step passes one closed month
        if month not in closed:
            return month
        month = next_month(month)
    return month


def assign_classes(
    new_rows: Iterable[InvoiceKey], counts: Mapping[InvoiceKey, int], quotas: Mapping[uuid.UUID, int | None]
) -> list[str]:
    """Classes for newly ledgered rows, given in ledger order (partition, offset).

    `counts` is the invoice's events count per (site, billing month) before the batch,
    read under a row lock; a row is `included` while the running count is below the
    site's monthly quota (None = no quota), `overlimit` from there on.
    """
    running = dict(counts)
    classes: list[str] = []
    for key in new_rows:
        seen = running.get(key, 0)
        quota = quotas.get(key[0])
        classes.append(INCLUDED if quota is None or seen < quota else OVERLIMIT)
        running[key] = seen + 1
    return classes
