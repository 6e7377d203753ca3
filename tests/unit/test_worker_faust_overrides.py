"""The assumptions services/opsmantik/worker/faust_overrides.py makes about Faust, checked against
the installed faust-streaming. Any failure here means the pinned version changed or behaves
differently: re-read the overrides against the new Faust before changing the expectations.

No broker: the worker's app is built but never started."""

from __future__ import annotations

import hashlib
import inspect
import tomllib
from collections import defaultdict
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree
from opsmantik.config import Settings
from opsmantik.worker.app import build_app
from opsmantik.worker.faust_overrides import FAUST_VERSION, BatchConsumer, BatchTransport

ROOT = Path(__file__).resolve().parents[2]
T = TP("t", 0)

# Faust's methods the overrides replace, extend or copy from, as faust-streaming 0.15.3 ships
# them: (parameters, sha256 of the source, first 16 hex digits). A changed body can break what
# an override assumes even when the name and signature stay.
FAUST_METHODS: dict[str, tuple[tuple[str, ...], str]] = {
    "_new_offset": (("self", "tp"), "1d2c7ea89a7ad4f1"),  # replaced: the commit guard
    "_drain_messages": (("self", "fetcher"), "44a2500309e83c63"),  # replaced: the batch hand-off
    "getmany": (("self", "timeout"), "4b168d84882a70d6"),  # its flow/generation/active checks are kept
    "_wait_next_records": (("self", "timeout"), "6218e1969a636b3f"),  # the fetch, called as is
    "perform_seek": (("self",), "0e8c130ff4b0afd8"),  # seek to committed, sets _read_offset
    "seek": (("self", "partition", "offset"), "b86a9fe05f956b30"),  # extended: resets the base
    "_seek": (("self", "partition", "offset"), "4f95c631420410a5"),  # the put-back's seek
    "track_message": (("self", "message"), "217d7f1399a4cd8e"),  # extended: notes the base
    "on_partitions_revoked": (("self", "revoked"), "d04b7ae72c6fc206"),  # extended; drops _read_offset
    "on_partitions_assigned": (("self", "assigned", "generation_id"), "29ce96596f05a18c"),  # extended
    "_filter_committable_offsets": (("self", "tps"), "dc5e9baf5d994485"),  # calls _new_offset
    "stop_flow": (("self",), "cf7e875a2b0d40e8"),  # sets suspend_flow: abandons a waiting put
    "resume_flow": (("self",), "db59630f25b5819b"),
}


@pytest.fixture
async def consumer(tmp_path: Path) -> AsyncIterator[BatchConsumer]:
    app = build_app(Settings(kafka_bootstrap="127.0.0.1:1", worker_group="unit-faust"), None, tmp_path)  # type: ignore[arg-type]
    c = app.consumer
    assert isinstance(c, BatchConsumer)
    yield c


def test_the_installed_faust_is_the_pinned_one() -> None:
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"faust-streaming=={FAUST_VERSION}" in pinned
    assert version("faust-streaming") == FAUST_VERSION


@pytest.mark.parametrize("name", sorted(FAUST_METHODS))
def test_the_faust_methods_the_overrides_rely_on_are_unchanged(name: str) -> None:
    params, digest = FAUST_METHODS[name]
    method = getattr(faust_aiokafka.Consumer, name)  # Faust's, not the worker's subclass
    assert tuple(inspect.signature(method).parameters) == params
    source = inspect.getsource(method)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, f"Faust's {name} changed"


async def test_the_bookkeeping_the_overrides_use_is_there(consumer: BatchConsumer) -> None:
    assert BatchTransport.Consumer is BatchConsumer and isinstance(consumer.transport, BatchTransport)
    assert isinstance(consumer.app.consumer_generation_id, int)
    for name in ("_read_offset", "_committed_offset"):  # defaultdicts: None for an unseen partition
        assert getattr(consumer, name)[T] is None
    assert consumer._acked[T] == [] and consumer._acked_index[T] == set()
    assert isinstance(consumer._gap[T], IntervalTree)
    assert consumer._n_acked == 0 and consumer._buffered_partitions == set()
    assert isinstance(consumer.app.monitor.stream_inbound_time, dict)
    for name in ("diag", "_stopped", "suspend_flow", "consumer_stopped_errors", "wait_first", "log"):
        assert hasattr(consumer, name), name


def faust_bookkeeping(acked: list[int], committed: int | None) -> Any:
    c = faust_aiokafka.Consumer.__new__(faust_aiokafka.Consumer)
    c._acked = defaultdict(list, {T: list(acked)})
    c._acked_index = defaultdict(set, {T: set(acked)})
    c._gap = defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None, {T: committed})
    return c


@pytest.mark.parametrize(("acked", "committed"), [([11, 12, 13], 10), ([1, 2], None)])
def test_faust_still_commits_past_one_unacked_head_offset(acked: list[int], committed: int | None) -> None:
    """faust-streaming #606, the reason for the commit guard: offset 10 (or 0) unacked, yet
    Faust's own _new_offset commits past it."""
    assert faust_aiokafka.Consumer._new_offset(faust_bookkeeping(acked, committed), T) == acked[-1] + 1


async def test_faust_seek_and_perform_seek_set_the_read_offset(consumer: BatchConsumer) -> None:
    sought: list[tuple[TP, int]] = []

    async def _seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    async def seek_to_committed() -> dict[TP, int]:
        return {T: 7}

    consumer._seek = _seek  # type: ignore[method-assign]
    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    await FaustConsumer.seek(consumer, T, 5)
    assert sought == [(T, 5)] and consumer._read_offset[T] == 5
    await consumer.perform_seek()
    assert consumer._read_offset[T] == 7 and consumer._committed_offset[T] == 7


async def test_faust_stop_flow_sets_the_event_a_waiting_put_is_abandoned_on(consumer: BatchConsumer) -> None:
    consumer.resume_flow()
    assert consumer.flow_active and not consumer.suspend_flow.is_set()
    consumer.stop_flow()
    assert not consumer.flow_active and consumer.suspend_flow.is_set()


async def test_faust_commits_what_the_guard_returns(consumer: BatchConsumer) -> None:
    consumer._committed_offset[T] = 3
    consumer._new_offset = lambda tp: 9  # type: ignore[method-assign]
    assert consumer._filter_committable_offsets([T]) == {T: 9}
