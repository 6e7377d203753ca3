"""`opsmantik stack up|down|status --json`: one JSON document each (the engines are a stand-in here;
tests/integration/test_cli.py runs `stack up --json` against the real stack)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from opsmantik.devstack import stack
from opsmantik.devstack.stack import EngineStatus

from tests.support.cli import run_main

KAFKA = EngineStatus("kafka", True, "4.4.0", 19092, 11, "/d/kafka")
PG = EngineStatus("postgres", False, "15.18", 15432, None, "/d/pg")


@dataclass(frozen=True)
class FakeStack:
    kafka_heap: str = "768m"
    brokers: int = 1
    standby_port: int = 0
    database_url: str = "postgresql://opsmantik@127.0.0.1:15432,127.0.0.1:15433/opsmantik"

    @classmethod
    def local(cls, brokers: int | None = None, standby: bool = False) -> FakeStack:
        return cls(brokers=brokers or 1, standby_port=15433 if standby else 0)

    def up(self) -> list[str]:
        return ["postgres"]

    def down(self) -> list[str]:
        return ["kafka"]

    def status(self) -> list[EngineStatus]:
        return [KAFKA, PG]


@pytest.fixture(autouse=True)
def fake_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "Stack", FakeStack)


def test_up_json() -> None:
    code, out, _ = run_main(["stack", "up", "--json"])
    doc = json.loads(out)
    assert code == 0 and doc["started"] == ["postgres"]
    assert [e["name"] for e in doc["engines"]] == ["kafka", "postgres"]


def test_down_json() -> None:
    code, out, _ = run_main(["stack", "down", "--json"])
    assert code == 0 and json.loads(out) == {"stopped": ["kafka"]}


def test_status_with_an_engine_down_is_exit_3_and_names_the_fix() -> None:
    code, out, err = run_main(["stack", "status", "--json"])
    assert code == 3 and [e["running"] for e in json.loads(out)] == [True, False]
    assert "`opsmantik stack up`" in err and err.count("\n") == 1


def test_up_standby_asks_for_the_standby_and_names_its_port() -> None:
    code, out, _ = run_main(["stack", "up", "--standby"])
    assert code == 0 and "standby (synchronous) on 15433" in out
    code, out, _ = run_main(["stack", "up"])
    assert code == 0 and "standby" not in out
