"""The local stack's Kafka start without needless JVMs: the cluster id made in Python as Kafka
makes it, the storage formatted only when it is not, and C1 only when asked for (tests' stacks)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from opsmantik.devstack.kafka_node import KafkaNode
from opsmantik.devstack.stack import kafka_uuid


def node(home: Path, quick_start: bool = False) -> KafkaNode:
    return KafkaNode(1, 30000, 30001, home, "1@127.0.0.1:30001", 1, "256m", quick_start)


def test_cluster_ids_have_kafkas_form() -> None:
    for _ in range(2000):
        text = kafka_uuid()
        assert len(text) == 22 and not text.startswith("-")
        assert len(base64.urlsafe_b64decode(text + "==")) == 16


def test_a_formatted_data_dir_starts_no_jvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = node(tmp_path)
    ran: list[list[str]] = []

    def run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        ran.append(cmd)
        n.data_dir.mkdir(parents=True, exist_ok=True)
        (n.data_dir / "meta.properties").write_text("cluster.id=x\n")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    n.format("AAAAAAAAAAAAAAAAAAAAAB")
    assert len(ran) == 1 and "format" in ran[0]  # unformatted: the StorageTool runs
    n.format("AAAAAAAAAAAAAAAAAAAAAB")
    assert len(ran) == 1  # formatted: nothing runs


def test_quick_start_is_c1_only_and_off_by_default(tmp_path: Path) -> None:
    assert "-XX:TieredStopAtLevel=1" in node(tmp_path, quick_start=True).java("kafka.Kafka")
    assert not any("Tiered" in a for a in node(tmp_path).java("kafka.Kafka"))
