"""KafkaPublisher.keys (gateway/publisher.py, issue 28): the ingest topic's keys with each site's
part formatted once, byte for byte what kafka/settings.py `request_keys` makes, in every
partition_key mode, for random sites and requests; and the per-site cache stays bounded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from opsmantik.config import Settings
from opsmantik.events import Event
from opsmantik.gateway import publisher
from opsmantik.gateway.publisher import KafkaPublisher
from opsmantik.kafka.settings import request_keys

IDS = st.text("ABCxyz0189._:-", min_size=1, max_size=128)
WHEN = datetime(2026, 12, 8, tzinfo=UTC)


def fake(mode: str) -> SimpleNamespace:
    """What KafkaPublisher.keys reads of its publisher (no producer needed)."""
    return SimpleNamespace(settings=Settings(partition_key=mode), _sites={})


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["request", "event", "site"]),
    st.lists(st.uuids(), min_size=1, max_size=4),
    st.lists(st.lists(IDS, max_size=6), min_size=1, max_size=6),
)
def test_keys_are_request_keys(mode: str, sites: list[uuid.UUID], requests: list[list[str]]) -> None:
    pub = fake(mode)
    for n, ids in enumerate(requests):  # the same publisher over requests: the cache is hit
        site = sites[n % len(sites)]
        events = [Event(i, "t", WHEN, 1, None) for i in ids]
        got = KafkaPublisher.keys(pub, site, events)  # type: ignore[arg-type]
        assert got == request_keys(pub.settings, site, ids)


def test_the_site_cache_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(publisher, "MAX_SITES", 3)
    pub = fake("request")
    for _ in range(10):
        site = uuid.uuid4()
        assert KafkaPublisher.keys(pub, site, [Event("e", "t", WHEN, 1, None)]) == [f"{site}/e".encode()]
        assert len(pub._sites) <= 3
