"""Seed §2.1 ingestion reliability and the §3 credit tier, in exact integer arithmetic.

reliability = persisted / eligible, where eligible = authenticated requests minus rate-limited
(security), quota (business) and invalid (400/413/415) answers, minus every request inside an
announced maintenance window. §3: data loss → 100 %; below 99.0 % → 25 %; below 99.9 % → 10 %.
Exactly 99.9 % owes nothing and exactly 99.0 % owes 10 % ("below" is strict).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

TIERS = ((Fraction(990, 1000), 25), (Fraction(999, 1000), 10))  # (strictly below → credit %)


@dataclass(frozen=True)
class Reliability:
    persisted: int
    eligible: int

    @property
    def ratio(self) -> Fraction:
        return Fraction(1) if self.eligible == 0 else Fraction(self.persisted, self.eligible)


def credit_percent(rel: Reliability, lost_events: int) -> int:
    if lost_events > 0:
        return 100
    for below, percent in TIERS:
        if rel.ratio < below:
            return percent
    return 0


def credit_reason(rel: Reliability, lost_events: int) -> str:
    if lost_events > 0:
        return f"data loss ({lost_events} acknowledged event(s) not captured): §3 100 % + termination right"
    pct = credit_percent(rel, 0)
    if pct == 25:
        return "ingestion reliability below 99.0 %: §3 25 %"
    if pct == 10:
        return "ingestion reliability below 99.9 %: §3 10 %"
    return "within the §2.1 guarantee (>= 99.9 %): no credit"
