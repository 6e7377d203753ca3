"""Event ids for events sent without one: UUIDv7 (RFC 9562), time-ordered, 74 random bits.

The random bits come from os.urandom, never from `random`: a forked producer would repeat the
parent's `random` stream, and two events with the same id are billed once.
"""

from __future__ import annotations

import os
import time
import uuid

_MASK_48 = (1 << 48) - 1


def uuid7(now_ms: int | None = None) -> str:
    ms = (time.time_ns() // 1_000_000 if now_ms is None else now_ms) & _MASK_48
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))
