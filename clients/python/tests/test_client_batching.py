"""The client's request sizing at its edges: 1000 events, 1 MiB, one event that alone fills it."""

from __future__ import annotations

import uuid

import pytest
from opsmantik_client.batching import ENVELOPE_BYTES, GATEWAY_MAX_BYTES, BatchLimits, encode_batch
from opsmantik_client.ids import uuid7, uuid7_many


def test_request_bytes_is_exactly_the_encoded_size() -> None:
    bodies = [b'{"a":1}', b'{"bb":22}', b"{}"]
    lim = BatchLimits()
    assert lim.request_bytes([len(b) for b in bodies]) == len(encode_batch(bodies))
    assert lim.request_bytes([]) == ENVELOPE_BYTES == len(encode_batch([]))


def test_event_count_edge() -> None:
    lim = BatchLimits()
    assert lim.take([10] * 1000) == 1000
    assert lim.take([10] * 1001) == 1000
    assert BatchLimits(max_events=7).take([10] * 8) == 7


def test_byte_edge_exactly_max_fits_one_more_does_not() -> None:
    lim = BatchLimits(max_bytes=100)
    # envelope 13 + 3 events + 2 commas = 100 exactly
    sizes = [28, 28, 29]
    assert lim.request_bytes(sizes) == 100
    assert lim.take(sizes) == 3
    assert lim.take([28, 28, 30]) == 2  # 101 bytes: the third waits for the next request
    assert lim.take([28, 28, 29, 1]) == 3


def test_gateway_limits_are_the_defaults() -> None:
    lim = BatchLimits()
    assert (lim.max_events, lim.max_bytes) == (1000, 1024 * 1024)
    assert lim.event_fits_alone(GATEWAY_MAX_BYTES - ENVELOPE_BYTES)
    assert not lim.event_fits_alone(GATEWAY_MAX_BYTES - ENVELOPE_BYTES + 1)
    assert lim.take([GATEWAY_MAX_BYTES - ENVELOPE_BYTES, 1]) == 1


@pytest.mark.parametrize(
    "bad",
    [
        BatchLimits(max_events=0),
        BatchLimits(max_events=1001),
        BatchLimits(max_bytes=GATEWAY_MAX_BYTES + 1),
        BatchLimits(linger_s=-1),
    ],
)
def test_limits_beyond_the_gateway_are_refused(bad: BatchLimits) -> None:
    assert bad.validate()


def test_uuid7_shape_order_and_uniqueness() -> None:
    ids = uuid7_many(5000) + [uuid7() for _ in range(100)]
    assert len(set(ids)) == len(ids)
    for s in ids:
        u = uuid.UUID(s)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == s
    early, late = uuid7(now_ms=1_000), uuid7(now_ms=2_000)
    assert early < late  # time-ordered by their text
    assert uuid7_many(1, now_ms=1_000)[0][:13] == early[:13]
