"""One Kafka broker process of the local stack (KRaft, combined broker + controller).

A single-broker stack is one node with its state straight under .local/kafka (the layout every
existing data directory has); a cluster of N is N nodes under .local/kafka/brokers-N/broker-I,
one data dir each, every node a voter of the controller quorum. Ports: node I (from 1) listens
for clients on base + I - 1 and for the quorum on base + 100 + I - 1 (a single node keeps its
historical controller port, base + 1).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from opsmantik.devstack.checkout import checkout_root

ROOT = checkout_root()
KAFKA_LIBS = ROOT / ".local" / "kafka" / "libs"  # shared by every stack: installed by `make deps`
CONTROLLER_OFFSET = 100  # a cluster's controller ports sit this far above its client ports
# KafkaRaftClient logs every quorum state change as "Completed transition to <State>(...)".
_QUORUM_STATE = re.compile(r"Completed transition to (\w+)\(")


def replication_for(brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) a cluster of `brokers` runs with: RF = min(3, N),
    min ISR = RF - 1 (at least 1), so acks=all survives the loss of one replica."""
    rf = min(3, max(1, brokers))
    return rf, max(1, rf - 1)


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    home: Path  # data/, logs/, kafka.pid and server.properties live here
    voters: str  # controller.quorum.voters of the whole cluster
    brokers: int  # cluster size: replication settings of the internal topics follow it
    heap: str
    # The client JIT only (C1): the JVM starts on half the CPU and runs hot code slower. For
    # short-lived stacks (the tests' private ones), never for a stack that is measured.
    quick_start: bool = False

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    def java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *(["-XX:TieredStopAtLevel=1"] if self.quick_start else []),
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs}",
            f"-Dlog4j2.configurationFile={ROOT / 'deploy/kafka/log4j2.properties'}",
            "-cp",
            f"{KAFKA_LIBS}/*",
            main,
            *args,
        ]

    def properties(self) -> Path:
        """deploy/kafka/server.properties with this node's id, dirs and ports (the formatter
        takes no --override), and the cluster's replication for the internal topics."""
        rf, min_isr = replication_for(self.brokers)
        ours = {
            "node.id": str(self.node_id),
            "log.dirs": str(self.data_dir),
            "controller.quorum.voters": self.voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
        }
        if self.brokers > 1:
            ours |= {
                "default.replication.factor": str(rf),
                "min.insync.replicas": str(min_isr),
                "offsets.topic.replication.factor": str(rf),
                "transaction.state.log.replication.factor": str(rf),
                "transaction.state.log.min.isr": str(min_isr),
                "share.coordinator.state.topic.replication.factor": str(rf),
                "share.coordinator.state.topic.min.isr": str(min_isr),
                # A SIGKILLed broker is fenced (its partitions get new leaders) after this,
                # not the 9 s default: the gateway's outbox covers the gap meanwhile.
                "broker.session.timeout.ms": "4000",
                "broker.heartbeat.interval.ms": "1000",
            }
        text = (ROOT / "deploy/kafka/server.properties").read_text()
        lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0] not in ours]
        lines += [f"{k}={v}" for k, v in ours.items()]
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "server.properties"
        path.write_text("\n".join(lines) + "\n")
        return path

    def format(self, cluster_id: str) -> None:
        """Idempotent: a formatted data dir (its meta.properties written) is left as it is, without
        starting a JVM to find that out (-g would skip it the same way)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        props = self.properties()
        if (self.data_dir / "meta.properties").is_file():
            return
        fmt = subprocess.run(
            self.java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "-g"),
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise RuntimeError(
                f"Kafka storage format failed for node {self.node_id}:\n{fmt.stdout}\n{fmt.stderr}"
            )

    def log_size(self) -> int:
        log = self.logs / "server.log"
        return log.stat().st_size if log.exists() else 0

    def spawn(self) -> subprocess.Popen[bytes]:
        with open(self.logs / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                self.java("kafka.Kafka", str(self.home / "server.properties")),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc

    def started_since(self, mark: int) -> bool:
        log = self.logs / "server.log"
        if not log.exists():
            return False
        with open(log, "rb") as f:
            f.seek(mark)
            return b"Kafka Server started" in f.read()

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def quorum_role(self) -> str:
        """The node's last controller-quorum state from its log: leader, follower, candidate..."""
        log = self.logs / "server.log"
        try:
            with open(log, "rb") as f:
                f.seek(max(0, log.stat().st_size - 2_000_000))
                states = _QUORUM_STATE.findall(f.read().decode(errors="replace"))
        except FileNotFoundError:
            return "unknown"
        return states[-1].lower().removesuffix("state") if states else "unknown"

    def signal(self, sig: int) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, pid_alive: object, timeout_s: float = 60.0) -> bool:
        """SIGTERM (a controlled shutdown), SIGKILL after timeout_s; False when not running."""
        pid = self.pid()
        if not pid_alive(pid):  # type: ignore[operator]
            return False
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:  # type: ignore[operator]
            time.sleep(0.2)
        if pid_alive(pid):  # type: ignore[operator]
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True
