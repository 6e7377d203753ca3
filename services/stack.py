"""The local stack: a single-node KRaft Kafka (Maven Central jars) and a PostgreSQL
cluster (Debian's packages), both as plain processes with their state under .local/.

`up` is idempotent (a running engine is left alone), `down` stops both cleanly (Kafka
by SIGTERM and a controlled shutdown, Postgres by `pg_ctl stop -m fast`), so no data
is lost between runs. Installing the jars and Postgres is the Makefile's job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer

from services.config import LOCAL_KAFKA_PORT, LOCAL_PG_PORT, Settings

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
KAFKA_LIBS = LOCAL / "kafka" / "libs"  # shared by every stack: installed once by `make deps`
PG_USER = "opsmantik"
PG_DB = "opsmantik"
START_TIMEOUT_S = 90.0
READY_TOPIC = "opsmantik.stack.ready"  # `stack up` proves an idempotent produce works here


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class EngineStatus:
    name: str
    running: bool
    version: str
    port: int
    pid: int | None
    data_dir: str


# ---------------------------------------------------------------- helpers


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _wait_port_free(port: int, timeout_s: float = 15.0) -> bool:
    """After a kill the old listener can linger for a moment; give it time to go."""
    deadline = time.monotonic() + timeout_s
    while _port_open(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


# ---------------------------------------------------------------- shared parts


def kafka_version() -> str:
    jars = sorted(KAFKA_LIBS.glob("kafka_2.13-*.jar"))
    return jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else "not installed"


def pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not candidates:
        raise StackError("PostgreSQL server not installed: run `make deps` (apt-get install postgresql)")
    return candidates[-1].parent


def pg_version() -> str:
    try:
        out = subprocess.run([str(pg_bin() / "postgres"), "--version"], capture_output=True, text=True)
    except StackError:
        return "not installed"
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    words = out.stdout.split()
    return words[2] if len(words) > 2 else out.stdout.strip()


def _as_pg_owner(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: run it as the unprivileged `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass(frozen=True)
class Stack:
    """One Kafka + one Postgres with their state under `home`. The default is the project's
    stack (.local/, ports 19092/15432); fault-injection tests start private ones elsewhere."""

    home: Path = LOCAL
    kafka_port: int = LOCAL_KAFKA_PORT
    pg_port: int = LOCAL_PG_PORT
    kafka_heap: str = Settings.kafka_heap  # OPSMANTIK_KAFKA_HEAP, through Settings

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.pg_port}/{PG_DB}"

    # ------------------------------------------------------------ Kafka

    def _kafka_java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java, f"-Xmx{self.kafka_heap}", f"-Xms{self.kafka_heap}", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dkafka.logs.dir={self.kafka_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={ROOT / 'deploy/kafka/log4j2.properties'}",
            "-cp", f"{KAFKA_LIBS}/*", main, *args,
        ]

    def _kafka_properties(self) -> Path:
        """deploy/kafka/server.properties with this stack's dirs and ports (the formatter
        takes no --override)."""
        p, c = self.kafka_port, self.kafka_port + 1
        ours = {
            "log.dirs": str(self.kafka_dir / "data"),
            "controller.quorum.voters": f"1@127.0.0.1:{c}",
            "listeners": f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{p}",
        }
        text = (ROOT / "deploy/kafka/server.properties").read_text()
        lines = [ln for ln in text.splitlines() if ln.split("=", 1)[0] not in ours]
        lines += [f"{k}={v}" for k, v in ours.items()]
        path = self.kafka_dir / "server.properties"
        path.write_text("\n".join(lines) + "\n")
        return path

    def kafka_pid(self) -> int | None:
        return _read_pid(self.kafka_dir / "kafka.pid")

    def kafka_status(self) -> EngineStatus:
        pid = self.kafka_pid()
        running = _pid_alive(pid) and _port_open(self.kafka_port)
        return EngineStatus("kafka", running, kafka_version(), self.kafka_port,
                            pid if running else None, str(self.kafka_dir / "data"))

    def kafka_up(self) -> bool:
        """Start the broker unless it runs; return True when it was started."""
        if self.kafka_status().running:
            return False
        if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
            raise StackError(f"Kafka jars missing in {KAFKA_LIBS}: run `make deps` first")
        if not _wait_port_free(self.kafka_port):
            raise StackError(f"port {self.kafka_port} is taken by a process that is not this stack's Kafka")
        logs = self.kafka_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        props = self._kafka_properties()
        cluster_file = self.kafka_dir / "cluster.id"
        if not cluster_file.exists():
            out = subprocess.run(self._kafka_java("kafka.tools.StorageTool", "random-uuid"),
                                 capture_output=True, text=True, check=True)
            cluster_file.write_text(out.stdout.strip().splitlines()[-1])
        fmt = subprocess.run(
            self._kafka_java("kafka.tools.StorageTool", "format", "-t",
                             cluster_file.read_text().strip(), "-c", str(props), "-g"),
            capture_output=True, text=True,
        )
        if fmt.returncode != 0:
            raise StackError(f"Kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
        log = logs / "server.log"
        start_mark = log.stat().st_size if log.exists() else 0
        with open(logs / "stdout.log", "ab") as out:
            proc = subprocess.Popen(self._kafka_java("kafka.Kafka", str(props)), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        (self.kafka_dir / "kafka.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"Kafka exited with {proc.returncode}; log tail:\n{_tail(log)}\n"
                                 f"{_tail(logs / 'stdout.log', 10)}")
            text = log.read_text(errors="replace")[start_mark:] if log.exists() else ""
            started = "Kafka Server started" in text and _port_open(self.kafka_port)
            if started and self._idempotent_produce_works():
                return True
            time.sleep(0.3)
        raise StackError(f"Kafka not ready after {START_TIMEOUT_S:.0f}s; log tail:\n{_tail(log)}")

    def _idempotent_produce_works(self) -> bool:
        """Ready means ready for our producers: a fresh broker answers "coordinator load in
        progress" to an idempotent producer for a few seconds after it says it started, and
        a gateway would (correctly, but needlessly) fall back to the outbox meanwhile."""
        producer = Producer({"bootstrap.servers": self.kafka_bootstrap, "acks": "all",
                             "enable.idempotence": True, "message.timeout.ms": 10000,
                             "log_level": 3})
        errors: list[object] = []
        producer.produce(READY_TOPIC, b"ready", on_delivery=lambda err, _msg: errors.append(err))
        producer.flush(15)
        return errors == [None]

    def kafka_down(self) -> bool:
        pid = self.kafka_pid()
        if not _pid_alive(pid):
            return False
        assert pid is not None
        os.kill(pid, signal.SIGTERM)  # controlled shutdown: flushes and closes the logs
        deadline = time.monotonic() + 60
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        (self.kafka_dir / "kafka.pid").unlink(missing_ok=True)
        return True

    # ------------------------------------------------------------ PostgreSQL

    def _pg_root(self) -> Path:
        """home/postgres, or, when root and `home` is not reachable by the `postgres` user
        (e.g. under /root), a directory under /var/lib/opsmantik linked from there."""
        link = self.home / "postgres"
        if link.exists() or link.is_symlink():
            return link.resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            link.mkdir()
            return link
        probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(self.home)]
        if subprocess.run(probe).returncode == 0:
            link.mkdir()
            target = link
        else:
            digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]
            target = Path("/var/lib/opsmantik") / digest / "postgres"
            target.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        shutil.chown(target, "postgres", "postgres")
        return target

    def pg_data(self) -> Path:
        return self._pg_root() / "data"

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = _as_pg_owner([str(pg_bin() / "pg_ctl"), "-D", str(self.pg_data()), *args])
        return subprocess.run(cmd, capture_output=True, text=True, check=check, stdin=subprocess.DEVNULL)

    def pg_pid(self) -> int | None:
        return _read_pid(self.pg_data() / "postmaster.pid")

    def pg_status(self) -> EngineStatus:
        pid = self.pg_pid()
        running = _pid_alive(pid) and _port_open(self.pg_port)
        return EngineStatus("postgres", running, pg_version(), self.pg_port,
                            pid if running else None, str(self.pg_data()))

    def _psql(self, sql: str, db: str = "postgres") -> str:
        cmd = [str(pg_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", PG_USER,
               "-d", db, "-tAc", sql]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    def _pg_init(self, data: Path) -> None:
        init = subprocess.run(
            _as_pg_owner([str(pg_bin() / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                          "-E", "UTF8", "--no-locale"]),
            capture_output=True, text=True,
        )
        if init.returncode != 0:
            raise StackError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# opsmantik local stack\n"
                f"port = {self.pg_port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{data}'\n"
                "max_connections = 300\n"
                "shared_buffers = 256MB\n"
                "synchronous_commit = on\n"  # a 200 means committed: keep commits durable
                "logging_collector = off\n"
            )

    def pg_up(self) -> bool:
        if self.pg_status().running:
            return False
        if not _wait_port_free(self.pg_port):
            raise StackError(f"port {self.pg_port} is taken by a process that is not this stack's Postgres")
        data = self.pg_data()
        if not (data / "PG_VERSION").exists():
            self._pg_init(data)
        log = self._pg_root() / "postgres.log"
        if os.geteuid() == 0:
            log.touch()
            shutil.chown(log, "postgres", "postgres")
        started = self._pg_ctl("-l", str(log), "-w", "-t", str(int(START_TIMEOUT_S)), "start", check=False)
        if started.returncode != 0:
            raise StackError(f"Postgres failed to start:\n{started.stdout}{started.stderr}\n"
                             f"log tail:\n{_tail(log)}")
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'") != "1":
            self._psql(f"CREATE DATABASE {PG_DB}")
        return True

    def pg_down(self) -> bool:
        if not self.pg_status().running:
            return False
        self._pg_ctl("-m", "fast", "-w", "stop")
        return True

    # ------------------------------------------------------------ both

    def up(self) -> list[str]:
        """Start what is not running; return the names of the engines started."""
        started = []
        if self.pg_up():
            started.append("postgres")
        if self.kafka_up():
            started.append("kafka")
        return started

    def down(self) -> list[str]:
        stopped = []
        if self.kafka_down():
            stopped.append("kafka")
        if self.pg_down():
            stopped.append("postgres")
        return stopped

    def status(self) -> list[EngineStatus]:
        return [self.kafka_status(), self.pg_status()]
