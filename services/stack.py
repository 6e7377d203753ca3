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

from services.config import LOCAL_KAFKA_PORT, LOCAL_PG_PORT

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
KAFKA_DIR = LOCAL / "kafka"
KAFKA_LIBS = KAFKA_DIR / "libs"
KAFKA_CONTROLLER_PORT = LOCAL_KAFKA_PORT + 1
PG_LINK = LOCAL / "postgres"
PG_USER = "opsmantik"
PG_DB = "opsmantik"
KAFKA_HEAP = os.environ.get("OPSMANTIK_KAFKA_HEAP", "768m")
START_TIMEOUT_S = 90.0


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


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


# ---------------------------------------------------------------- Kafka


def kafka_version() -> str:
    jars = sorted(KAFKA_LIBS.glob("kafka_2.13-*.jar"))
    return jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else "not installed"


def _kafka_java(main: str, *args: str) -> list[str]:
    java = shutil.which("java") or "java"
    return [
        java, f"-Xmx{KAFKA_HEAP}", f"-Xms{KAFKA_HEAP}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true", f"-Dkafka.logs.dir={KAFKA_DIR / 'logs'}",
        f"-Dlog4j2.configurationFile={ROOT / 'deploy/kafka/log4j2.properties'}",
        "-cp", f"{KAFKA_LIBS}/*", main, *args,
    ]


def _kafka_properties() -> Path:
    """deploy/kafka/server.properties with this checkout's data dir (the formatter takes no overrides)."""
    text = (ROOT / "deploy/kafka/server.properties").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("log.dirs=")]
    lines.append(f"log.dirs={KAFKA_DIR / 'data'}")
    path = KAFKA_DIR / "server.properties"
    path.write_text("\n".join(lines) + "\n")
    return path


def kafka_status() -> EngineStatus:
    pid = _read_pid(KAFKA_DIR / "kafka.pid")
    running = _pid_alive(pid) and _port_open(LOCAL_KAFKA_PORT)
    return EngineStatus("kafka", running, kafka_version(), LOCAL_KAFKA_PORT,
                        pid if running else None, str(KAFKA_DIR / "data"))


def kafka_up() -> bool:
    """Start the broker unless it runs; return True when it was started."""
    if kafka_status().running:
        return False
    if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        raise StackError(f"Kafka jars missing in {KAFKA_LIBS}: run `make deps` first")
    if _port_open(LOCAL_KAFKA_PORT):
        raise StackError(f"port {LOCAL_KAFKA_PORT} is taken by a process that is not this stack's Kafka")
    (KAFKA_DIR / "logs").mkdir(parents=True, exist_ok=True)
    props = _kafka_properties()
    cluster_file = KAFKA_DIR / "cluster.id"
    if not cluster_file.exists():
        out = subprocess.run(_kafka_java("kafka.tools.StorageTool", "random-uuid"),
                             capture_output=True, text=True, check=True)
        cluster_file.write_text(out.stdout.strip().splitlines()[-1])
    fmt = subprocess.run(
        _kafka_java("kafka.tools.StorageTool", "format", "-t", cluster_file.read_text().strip(),
                    "-c", str(props), "-g"),
        capture_output=True, text=True,
    )
    if fmt.returncode != 0:
        raise StackError(f"Kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
    log = KAFKA_DIR / "logs" / "server.log"
    start_mark = log.stat().st_size if log.exists() else 0
    with open(KAFKA_DIR / "logs" / "stdout.log", "ab") as out:
        proc = subprocess.Popen(_kafka_java("kafka.Kafka", str(props)), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (KAFKA_DIR / "kafka.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"Kafka exited with {proc.returncode}; log tail:\n{_tail(log)}\n"
                             f"{_tail(KAFKA_DIR / 'logs' / 'stdout.log', 10)}")
        started = log.exists() and "Kafka Server started" in log.read_text(errors="replace")[start_mark:]
        if started and _port_open(LOCAL_KAFKA_PORT):
            return True
        time.sleep(0.3)
    raise StackError(f"Kafka not ready after {START_TIMEOUT_S:.0f}s; log tail:\n{_tail(log)}")


def kafka_down() -> bool:
    pid = _read_pid(KAFKA_DIR / "kafka.pid")
    if not _pid_alive(pid):
        return False
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # controlled shutdown: flushes and closes the logs
    deadline = time.monotonic() + 60
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    (KAFKA_DIR / "kafka.pid").unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------- PostgreSQL


def pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not candidates:
        raise StackError("PostgreSQL server not installed: run `make deps` (apt-get install postgresql)")
    return candidates[-1].parent


def _as_pg_owner(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: run it as the unprivileged `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_data_root() -> Path:
    """.local/postgres, or, when root and the checkout is not reachable by the `postgres`
    user (e.g. under /root), a directory under /var/lib/opsmantik linked from there."""
    if PG_LINK.exists() or PG_LINK.is_symlink():
        return PG_LINK.resolve()
    LOCAL.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        PG_LINK.mkdir()
        return PG_LINK
    reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(LOCAL)]).returncode == 0
    if reachable:
        PG_LINK.mkdir()
        target = PG_LINK
    else:
        digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
        target = Path("/var/lib/opsmantik") / digest / "postgres"
        target.mkdir(parents=True, exist_ok=True)
        PG_LINK.symlink_to(target)
    shutil.chown(target, "postgres", "postgres")
    return target


def _pg_data() -> Path:
    return _pg_data_root() / "data"


def _pg_ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = _as_pg_owner([str(pg_bin() / "pg_ctl"), "-D", str(_pg_data()), *args])
    return subprocess.run(cmd, capture_output=True, text=True, check=check, stdin=subprocess.DEVNULL)


def pg_version() -> str:
    try:
        out = subprocess.run([str(pg_bin() / "postgres"), "--version"], capture_output=True, text=True)
    except StackError:
        return "not installed"
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    words = out.stdout.split()
    return words[2] if len(words) > 2 else out.stdout.strip()


def pg_status() -> EngineStatus:
    data = _pg_data()
    pid = _read_pid(data / "postmaster.pid")
    running = _pid_alive(pid) and _port_open(LOCAL_PG_PORT)
    return EngineStatus("postgres", running, pg_version(), LOCAL_PG_PORT,
                        pid if running else None, str(data))


def _psql(sql: str, db: str = "postgres") -> str:
    cmd = [str(pg_bin() / "psql"), "-h", "127.0.0.1", "-p", str(LOCAL_PG_PORT), "-U", PG_USER,
           "-d", db, "-tAc", sql]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def _pg_init(data: Path) -> None:
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
            f"port = {LOCAL_PG_PORT}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{data}'\n"
            "max_connections = 300\n"
            "shared_buffers = 256MB\n"
            "synchronous_commit = on\n"  # a 200 means committed: keep commits durable
            "logging_collector = off\n"
        )


def pg_up() -> bool:
    if pg_status().running:
        return False
    if _port_open(LOCAL_PG_PORT):
        raise StackError(f"port {LOCAL_PG_PORT} is taken by a process that is not this stack's Postgres")
    data = _pg_data()
    if not (data / "PG_VERSION").exists():
        _pg_init(data)
    log = _pg_data_root() / "postgres.log"
    if os.geteuid() == 0:
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    started = _pg_ctl("-l", str(log), "-w", "-t", str(int(START_TIMEOUT_S)), "start", check=False)
    if started.returncode != 0:
        raise StackError(f"Postgres failed to start:\n{started.stdout}{started.stderr}\nlog tail:\n{_tail(log)}")
    if _psql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'") != "1":
        _psql(f"CREATE DATABASE {PG_DB}")
    return True


def pg_down() -> bool:
    if not pg_status().running:
        return False
    _pg_ctl("-m", "fast", "-w", "stop")
    return True


# ---------------------------------------------------------------- the stack


def up() -> list[str]:
    """Start what is not running; return the names of the engines started."""
    started = []
    if pg_up():
        started.append("postgres")
    if kafka_up():
        started.append("kafka")
    return started


def down() -> list[str]:
    stopped = []
    if kafka_down():
        stopped.append("kafka")
    if pg_down():
        stopped.append("postgres")
    return stopped


def status() -> list[EngineStatus]:
    return [kafka_status(), pg_status()]
