"""What to do with an answer, and how long to wait before the next attempt: pure functions.

200                      done: one result per event
400 with per-event index the indexed events are rejected, the others are sent again at once
                         (the gateway validates a batch whole: nothing of it was stored)
400 otherwise, 401, 415,
other 4xx                rejected: sending the same bytes again cannot succeed
413                      split the batch in halves; a single event is rejected
408, 425, 429, 5xx,
timeout, no connection   retried with jittered backoff, at least as long as the server says
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class Action(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    REJECT = "reject"
    SPLIT = "split"


RETRY_STATUSES = frozenset({408, 425, 429})


def classify(status: int | None) -> Action:
    """`None` is a transport failure (timeout, refused, reset): the events may or may not have
    been stored, and re-sending them with the same event_id is always safe."""
    if status is None or status in RETRY_STATUSES or status >= 500:
        return Action.RETRY
    if 200 <= status < 300:
        return Action.DONE
    if status == 413:
        return Action.SPLIT
    return Action.REJECT


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def retry_after_s(raw: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (RFC 9110: delta-seconds or an HTTP-date)."""
    seconds = _number(raw)
    if seconds is not None or raw is None:
        return seconds
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def server_wait_s(headers: Mapping[str, str] | None, now: datetime | None = None) -> float | None:
    """How long the server asked us to wait: Retry-After first; else, when the RateLimit
    headers say no request is left, until RateLimit-Reset. None when it said nothing."""
    if not headers:
        return None
    after = retry_after_s(_header(headers, "retry-after"), now)
    if after is not None:
        return after
    remaining = _number(_header(headers, "ratelimit-remaining"))
    reset = _number(_header(headers, "ratelimit-reset"))
    if remaining is not None and remaining < 1 and reset is not None:
        return reset
    return None


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.05
    cap_s: float = 5.0
    server_jitter: float = 0.2  # up to +20 % on a server-given wait, so clients do not stampede

    def validate(self) -> list[str]:
        return [] if 0 < self.base_s <= self.cap_s else ["backoff needs 0 < base_s <= cap_s"]

    def delay(
        self,
        attempt: int,
        headers: Mapping[str, str] | None = None,
        rand: Callable[[], float] = random.random,
        now: datetime | None = None,
    ) -> float:
        """Wait before attempt `attempt + 1` (attempt counts failures so far, from 1).
        Full jitter (AWS architecture blog) below the cap; never shorter than the server asked."""
        exp = min(self.cap_s, self.base_s * (2 ** min(max(attempt, 1) - 1, 30)))
        jittered = exp * rand()
        server = server_wait_s(headers, now)
        if server is None:
            return jittered
        return server * (1 + self.server_jitter * rand())


def pause_after_success(headers: Mapping[str, str] | None) -> float:
    """After a 200 that spent the last token: hold further requests until the bucket refills."""
    if not headers:
        return 0.0
    remaining = _number(_header(headers, "ratelimit-remaining"))
    reset = _number(_header(headers, "ratelimit-reset"))
    if remaining is not None and remaining < 1 and reset is not None:
        return reset
    return 0.0


def rejected_indexes(count: int, body: object) -> dict[int, str] | None:
    """For a 400 `{"error", "details": [{"index", "field", "message"}]}`: the message per
    rejected event index, or None when the error is not attributable to single events
    (then the whole batch is rejected)."""
    if not isinstance(body, dict):
        return None
    details = body.get("details")
    if not isinstance(details, list) or not details:
        return None
    out: dict[int, str] = {}
    for d in details:
        if not isinstance(d, dict):
            return None
        index = d.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            return None
        text = f"{d.get('field')}: {d.get('message')}" if d.get("field") else str(d.get("message"))
        out[index] = f"{out[index]}; {text}" if index in out else text
    return out
