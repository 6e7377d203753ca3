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


def uuid7_many(n: int, now_ms: int | None = None) -> list[str]:
    """n UUIDv7 strings sharing one millisecond: one urandom call and string slicing instead of
    n big-integer round trips (≈ 5× cheaper per id, which matters at 100k events/s)."""
    ms = (time.time_ns() // 1_000_000 if now_ms is None else now_ms) & _MASK_48
    t = f"{ms:012x}"
    head = f"{t[:8]}-{t[8:12]}-7"
    raw = os.urandom(10 * n).hex()  # 20 hex digits per id, 74 random bits used
    variant = "89ab"
    out = []
    for i in range(0, 20 * n, 20):
        h = raw[i : i + 20]
        out.append(f"{head}{h[0:3]}-{variant[int(h[3], 16) & 3]}{h[4:7]}-{h[7:19]}")
    return out
