"""The local stack: KRaft Kafka (Maven Central jars; one broker by default, or a cluster of
N with `stack up --brokers N`, services/opsmantik/devstack/kafka_node.py) and a PostgreSQL cluster (Debian's
packages), all plain processes with their state under .local/.

`up` is idempotent (a running engine is left alone), `down` stops both cleanly (Kafka
by SIGTERM and a controlled shutdown, Postgres by `pg_ctl stop -m fast`), so no data
is lost between runs. Installing the jars and Postgres is the Makefile's job.
"""

from __future__ import annotations

import base64
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

from opsmantik.config import LOCAL_KAFKA_PORT, LOCAL_PG_PORT, Settings
from opsmantik.devstack.checkout import checkout_root
from opsmantik.devstack.kafka_node import CONTROLLER_OFFSET, KAFKA_LIBS, KafkaNode
from opsmantik.errors import Unavailable

ROOT = checkout_root()
LOCAL = ROOT / ".local"
PG_USER = "opsmantik"
PG_DB = "opsmantik"
CLUSTER_HEAP = "512m"  # per broker of a cluster: three JVMs share the host
START_TIMEOUT_S = 90.0
ARCHIVE_CONF = "opsmantik-archive.conf"  # WAL archiving (services/opsmantik/recovery/backup.py)
# The streaming standby (`stack up --standby`): its application name (from its cluster_name) is
# what the primary's synchronous_standby_names waits for; its slot keeps the WAL it has not had.
STANDBY_NAME = "opsmantik_standby"
STANDBY_SLOT = "opsmantik_standby"
LOCAL_STANDBY_PORT = LOCAL_PG_PORT + 1
READY_TOPIC = "opsmantik.stack.ready"  # `stack up` proves an idempotent produce works here


class StackError(Unavailable, RuntimeError):
    pass


@dataclass(frozen=True)
class EngineStatus:
    name: str
    running: bool
    version: str
    port: int
    pid: int | None
    data_dir: str
    role: str = ""


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
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
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


def kafka_uuid() -> str:
    """A cluster id in the form of Kafka's Uuid (StorageTool random-uuid, without a JVM): 16
    random bytes (Kafka's are a version-4 UUID's; any 16 bytes are a valid id) in URL-safe base64
    without padding, never starting with '-' nor one of its two reserved ids (zero, ...AQ)."""
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not text.startswith("-") and text not in ("A" * 22, "A" * 21 + "Q"):
            return text


@dataclass(frozen=True)
class Stack:
    """Kafka (one broker, or a cluster of `brokers`) + one Postgres with their state under
    `home`. The default is the project's stack (.local/, ports 19092/15432); fault-injection
    tests and benchmarks start private ones elsewhere."""

    home: Path = LOCAL
    kafka_port: int = LOCAL_KAFKA_PORT
    pg_port: int = LOCAL_PG_PORT
    brokers: int = 1
    # The newest archived WAL is at most this old while there is traffic (the restore point's lag).
    archive_timeout_s: int = 60
    # A streaming standby on this port (0: none). With `synchronous`, the primary's every commit
    # (an outbox row, so the gateway's 200) waits until the standby has it on disk.
    standby_port: int = 0
    synchronous: bool = True

    @classmethod
    def local(cls, brokers: int | None = None, standby: bool = False) -> Stack:
        """The project's stack; without `brokers`, the size `stack up` last recorded; a standby
        when asked for or when one was made before (its data directory exists)."""
        with_standby = standby or (LOCAL / "postgres" / "standby").is_dir()
        return cls(brokers=brokers or recorded_brokers(LOCAL), standby_port=LOCAL_STANDBY_PORT * with_standby)

    kafka_heap: str = Settings.kafka_heap  # OPSMANTIK_KAFKA_HEAP, through Settings (single broker)
    kafka_quick_start: bool = False  # KafkaNode.quick_start: the tests' short-lived stacks

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes())

    @property
    def database_url(self) -> str:
        """With a standby, both hosts and target_session_attrs=read-write: a client connects to
        whichever accepts writes, so every process follows a promotion by itself."""
        if not self.standby_port:
            return f"postgresql://{PG_USER}@127.0.0.1:{self.pg_port}/{PG_DB}"
        hosts = f"127.0.0.1:{self.pg_port},127.0.0.1:{self.standby_port}"
        return f"postgresql://{PG_USER}@{hosts}/{PG_DB}?target_session_attrs=read-write"

    # ------------------------------------------------------------ Kafka

    def _layout_dir(self) -> Path:
        return self.kafka_dir if self.brokers == 1 else self.kafka_dir / f"brokers-{self.brokers}"

    def nodes(self) -> list[KafkaNode]:
        if self.brokers == 1:  # the historical single-node layout and ports
            return [
                KafkaNode(
                    1,
                    self.kafka_port,
                    self.kafka_port + 1,
                    self.kafka_dir,
                    f"1@127.0.0.1:{self.kafka_port + 1}",
                    1,
                    self.kafka_heap,
                    self.kafka_quick_start,
                )
            ]
        ids = range(1, self.brokers + 1)
        ctl = {i: self.kafka_port + CONTROLLER_OFFSET + i - 1 for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{ctl[i]}" for i in ids)
        return [
            KafkaNode(
                i,
                self.kafka_port + i - 1,
                ctl[i],
                self._layout_dir() / f"broker-{i}",
                voters,
                self.brokers,
                CLUSTER_HEAP,
                self.kafka_quick_start,
            )
            for i in ids
        ]

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes() if n.node_id == node_id)

    def kafka_pid(self) -> int | None:
        return self.nodes()[0].pid()

    def kafka_pids(self) -> list[int]:
        return [p for n in self.nodes() if _pid_alive(p := n.pid()) and p]

    def broker_status(self, node: KafkaNode) -> EngineStatus:
        pid = node.pid()
        running = _pid_alive(pid) and _port_open(node.port)
        role = "broker+controller"
        if running and self.brokers > 1:
            role += f", quorum {node.quorum_role()}"
        return EngineStatus(
            "kafka" if self.brokers == 1 else f"kafka-{node.node_id}",
            running,
            kafka_version(),
            node.port,
            pid if running else None,
            str(node.data_dir),
            role,
        )

    def kafka_status(self) -> EngineStatus:
        """The cluster as one engine: running when every broker runs."""
        each = [self.broker_status(n) for n in self.nodes()]
        if len(each) == 1:
            return each[0]
        return EngineStatus(
            "kafka",
            all(e.running for e in each),
            kafka_version(),
            self.kafka_port,
            each[0].pid,
            str(self._layout_dir()),
            f"cluster of {self.brokers}",
        )

    def _cluster_id(self) -> str:
        cluster_file = self._layout_dir() / "cluster.id"
        if not cluster_file.exists():
            cluster_file.parent.mkdir(parents=True, exist_ok=True)
            cluster_file.write_text(kafka_uuid())
        return cluster_file.read_text().strip()

    def kafka_up(self) -> bool:
        """Start every broker that does not run; return True when one was started."""
        down = [n for n in self.nodes() if not self.broker_status(n).running]
        if not down:
            return False
        if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
            raise StackError(f"Kafka jars missing in {KAFKA_LIBS}: run `make deps` first")
        for n in down:
            if not _wait_port_free(n.port):
                raise StackError(f"port {n.port} is taken by a process that is not this stack's Kafka")
        cluster_id = self._cluster_id()
        for n in down:
            try:
                n.format(cluster_id)
            except RuntimeError as exc:
                raise StackError(str(exc)) from None
        marks = {n.node_id: n.log_size() for n in down}
        procs = {n.node_id: n.spawn() for n in down}
        record_brokers(self.home, self.brokers)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for n in down:
                proc = procs[n.node_id]
                if proc.poll() is not None:
                    raise StackError(
                        f"Kafka node {n.node_id} exited with {proc.returncode}; log tail:\n"
                        f"{_tail(n.logs / 'server.log')}\n{_tail(n.logs / 'stdout.log', 10)}"
                    )
            started = all(n.started_since(marks[n.node_id]) and _port_open(n.port) for n in down)
            if started and self._idempotent_produce_works():
                return True
            time.sleep(0.3)
        raise StackError(
            f"Kafka not ready after {START_TIMEOUT_S:.0f}s; log tail:\n{_tail(down[0].logs / 'server.log')}"
        )

    def _idempotent_produce_works(self) -> bool:
        """Ready means ready for our producers: a fresh broker answers "coordinator load in
        progress" to an idempotent producer for a few seconds after it says it started, and
        a gateway would (correctly, but needlessly) fall back to the outbox meanwhile."""
        producer = Producer(
            {
                "bootstrap.servers": self.kafka_bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "message.timeout.ms": 10000,
                "log_level": 3,
            }
        )
        errors: list[object] = []
        producer.produce(READY_TOPIC, b"ready", on_delivery=lambda err, _msg: errors.append(err))
        producer.flush(15)
        return errors == [None]

    def kafka_down(self) -> bool:
        """Stop every broker (SIGTERM to all at once: a cluster shutting down one by one would
        move every leader twice)."""
        running = [n for n in self.nodes() if _pid_alive(n.pid())]
        for n in running:
            n.signal(signal.SIGTERM)
        for n in running:
            n.stop(_pid_alive)
        return bool(running)

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

    def pg_root(self) -> Path:
        """Where Postgres' data, WAL archive and backups live (services/opsmantik/recovery/)."""
        return self._pg_root()

    def pg_data(self) -> Path:
        return self._pg_root() / "data"

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._psql(sql, db)

    def _pg_ctl(
        self, *args: str, check: bool = True, data: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = _as_pg_owner([str(pg_bin() / "pg_ctl"), "-D", str(data or self.pg_data()), *args])
        return subprocess.run(cmd, capture_output=True, text=True, check=check, stdin=subprocess.DEVNULL)

    def pg_pid(self) -> int | None:
        return _read_pid(self.pg_data() / "postmaster.pid")

    def pg_status(self) -> EngineStatus:
        pid = self.pg_pid()
        running = _pid_alive(pid) and _port_open(self.pg_port)
        return EngineStatus(
            "postgres", running, pg_version(), self.pg_port, pid if running else None, str(self.pg_data())
        )

    def _psql(self, sql: str, db: str = "postgres", port: int = 0) -> str:
        cmd = [
            str(pg_bin() / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port or self.pg_port),
            "-U",
            PG_USER,
            "-d",
            db,
            "-tAc",
            sql,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    def _pg_init(self, data: Path) -> None:
        init = subprocess.run(
            _as_pg_owner(
                [
                    str(pg_bin() / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]
            ),
            capture_output=True,
            text=True,
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
                # per-statement times: the benchmark's view of where Postgres' time goes
                "shared_preload_libraries = 'pg_stat_statements'\n"
            )

    def pg_up(self) -> bool:
        if self.pg_status().running:
            return False
        if not _wait_port_free(self.pg_port):
            raise StackError(f"port {self.pg_port} is taken by a process that is not this stack's Postgres")
        data = self.pg_data()
        if not (data / "PG_VERSION").exists():
            if self.standby_promoted():
                raise StackError(
                    f"the primary's data directory {data} is gone and the standby (port "
                    f"{self.standby_port}) was promoted: it is the primary now. Keep it serving; a "
                    'new primary here would split the data (docs/runbook.md "Primary lost")'
                )
            self._pg_init(data)
        self._pg_archive_conf(data)
        log = self._pg_root() / "postgres.log"
        if os.geteuid() == 0:
            log.touch()
            shutil.chown(log, "postgres", "postgres")
        started = self._pg_ctl("-l", str(log), "-w", "-t", str(int(START_TIMEOUT_S)), "start", check=False)
        if started.returncode != 0:
            raise StackError(
                f"Postgres failed to start:\n{started.stdout}{started.stderr}\nlog tail:\n{_tail(log)}"
            )
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'") != "1":
            self._psql(f"CREATE DATABASE {PG_DB}")
        return True

    def _pg_archive_conf(self, data: Path) -> None:
        """WAL archiving into pg_root/wal-archive (services/opsmantik/recovery/backup.py restores
        from it), written at every start so a stack made before archiving existed gets it too."""
        archive = self._pg_root() / "wal-archive"
        archive.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(archive, "postgres", "postgres")
        (data / ARCHIVE_CONF).write_text(
            "# written by `opsmantik stack up` (services/opsmantik/devstack/stack.py)\n"
            "archive_mode = on\n"
            # never overwrite a segment already archived (a restored server's new timeline renames)
            f"archive_command = 'test ! -f {archive}/%f && cp %p {archive}/%f'\n"
            f"archive_timeout = {self.archive_timeout_s}\n"
        )
        conf = data / "postgresql.conf"
        if ARCHIVE_CONF not in conf.read_text():
            with open(conf, "a") as f:
                f.write(f"include_if_exists = '{ARCHIVE_CONF}'\n")

    def pg_down(self) -> bool:
        if not self.pg_status().running:
            return False
        self._pg_ctl("-m", "fast", "-w", "stop")
        return True

    # ------------------------------------------------------------ the standby

    def standby_data(self) -> Path:
        return self._pg_root() / "standby"

    def standby_promoted(self) -> bool:
        """The standby's data directory exists and is no longer a standby's (it was promoted)."""
        data = self.standby_data()
        return (
            bool(self.standby_port)
            and (data / "PG_VERSION").exists()
            and not (data / "standby.signal").exists()
        )

    def standby_status(self) -> EngineStatus:
        data = self.standby_data()
        pid = _read_pid(data / "postmaster.pid")
        running = _pid_alive(pid) and _port_open(self.standby_port)
        role = "promoted (primary)" if self.standby_promoted() else "standby"
        if running and not self.standby_promoted():
            role += f", {self._replication_state() or 'not streaming'}"
        return EngineStatus(
            "postgres-standby",
            running,
            pg_version(),
            self.standby_port,
            pid if running else None,
            str(data),
            role,
        )

    def _replication_state(self) -> str:
        """The primary's view of the standby: "streaming sync", "streaming async", or ""."""
        try:
            return self._psql(
                "SELECT state || ' ' || sync_state FROM pg_stat_replication "
                f"WHERE application_name = '{STANDBY_NAME}'"
            )
        except subprocess.CalledProcessError:
            return ""  # the primary is down

    def standby_up(self) -> bool:
        """Make the standby if it has no data yet (pg_basebackup -R from the running primary, with
        a replication slot), start it, wait until it streams, then make it synchronous. Returns
        True when it was started."""
        if self.standby_status().running:
            return False
        if not _wait_port_free(self.standby_port):
            raise StackError(
                f"port {self.standby_port} is taken by a process that is not this stack's standby"
            )
        data = self.standby_data()
        if not (data / "PG_VERSION").exists():
            self._standby_clone(data)
        log = self._pg_root() / "standby.log"
        if os.geteuid() == 0:
            log.touch()
            shutil.chown(log, "postgres", "postgres")
        started = self._pg_ctl(
            "-l", str(log), "-w", "-t", str(int(START_TIMEOUT_S)), "start", check=False, data=data
        )
        if started.returncode != 0:
            raise StackError(
                f"standby failed to start:\n{started.stdout}{started.stderr}\nlog tail:\n{_tail(log)}"
            )
        if not self.standby_promoted():
            self._wait_replication("streaming", "standby streaming from the primary")
            self.set_synchronous(self.synchronous)
        return True

    def _standby_clone(self, data: Path) -> None:
        have_slot = self._psql(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{STANDBY_SLOT}'")
        if have_slot != "1":
            self._psql(f"SELECT pg_create_physical_replication_slot('{STANDBY_SLOT}')")
        clone = subprocess.run(
            _as_pg_owner(
                [
                    str(pg_bin() / "pg_basebackup"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.pg_port),
                    "-U",
                    PG_USER,
                    "-D",
                    str(data),
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-R",
                    "-S",
                    STANDBY_SLOT,
                ]
            ),  # fmt: skip
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if clone.returncode != 0:
            raise StackError(f"pg_basebackup for the standby failed: {clone.stderr.strip()[-800:]}")
        # postgresql.auto.conf is read last: these win over the primary's copied settings. A
        # promoted standby has no standby of its own, so it must not wait for one.
        with open(data / "postgresql.auto.conf", "a") as conf:
            conf.write(
                "# the standby (services/opsmantik/devstack/stack.py)\n"
                f"port = {self.standby_port}\n"
                f"unix_socket_directories = '{data}'\n"
                f"cluster_name = '{STANDBY_NAME}'\n"  # its application_name on the primary
                "synchronous_standby_names = ''\n"
                "hot_standby = on\n"
            )

    def set_synchronous(self, on: bool) -> None:
        """The primary waits for the standby at every commit (on), or not (off: the drill's
        planted bug, and the benchmark's baseline)."""
        names = STANDBY_NAME if on else ""
        self._psql(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
        self._psql("SELECT pg_reload_conf()")
        self._wait_replication(
            "streaming " + ("sync" if on else "async"), f"standby {'sync' if on else 'async'}"
        )

    def _wait_replication(self, state: str, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._replication_state().startswith(state):
            if time.monotonic() > deadline:
                log = self._pg_root() / "standby.log"
                raise StackError(f"{what}: not after {START_TIMEOUT_S:.0f}s; standby log tail:\n{_tail(log)}")
            time.sleep(0.1)

    def promote(self) -> None:
        """Make the standby the primary (`pg_ctl promote`, waiting until it accepts writes)."""
        done = self._pg_ctl(
            "-w", "-t", str(int(START_TIMEOUT_S)), "promote", check=False, data=self.standby_data()
        )
        if done.returncode != 0:
            raise StackError(f"promote failed: {done.stdout}{done.stderr}")

    def standby_down(self) -> bool:
        if not self.standby_status().running:
            return False
        self._pg_ctl("-m", "fast", "-w", "stop", data=self.standby_data())
        return True

    # ------------------------------------------------------------ both

    def up(self) -> list[str]:
        """Start what is not running; return the names of the engines started."""
        started = []
        if self.pg_up():
            started.append("postgres")
        if self.standby_port and self.standby_up():
            started.append("postgres-standby")
        if self.kafka_up():
            started.append("kafka")
        return started

    def down(self) -> list[str]:
        stopped = []
        if self.kafka_down():
            stopped.append("kafka")
        if self.pg_down():
            stopped.append("postgres")
        # After the primary: a fast stop ships its last WAL to the standby first.
        if self.standby_port and self.standby_down():
            stopped.append("postgres-standby")
        return stopped

    def status(self) -> list[EngineStatus]:
        """One line per broker, then Postgres (and its standby)."""
        standby = [self.standby_status()] if self.standby_port else []
        return [*(self.broker_status(n) for n in self.nodes()), self.pg_status(), *standby]


def recorded_brokers(home: Path) -> int:
    """The broker count `stack up` recorded under `home` (1 when none was)."""
    try:
        return max(1, int((home / "kafka" / "brokers").read_text().strip()))
    except (FileNotFoundError, ValueError):
        return 1


def record_brokers(home: Path, brokers: int) -> None:
    path = home / "kafka" / "brokers"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{brokers}\n")
