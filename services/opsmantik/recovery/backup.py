"""Base backups and point-in-time restore of the stack's Postgres: PostgreSQL's own mechanisms.

- WAL is archived continuously by the server itself (`archive_mode = on`, an `archive_command`
  that copies each finished segment into `<stack>/postgres/wal-archive`; devstack/stack.py writes
  it). `archive_timeout` bounds how old the newest archived WAL can be while there is traffic.
- `take_backup` is `pg_basebackup -X stream` into `<stack>/postgres/backups/<UTC stamp>/`, with
  `<UTC stamp>.json` beside it saying when it started and finished (written last: a backup
  without it did not finish). A backup is restorable to any time
  after it finished and up to the newest archived WAL.
- `restore` stops the server, moves the data directory aside (never deleted: an operator decides),
  copies the newest backup that finished at or before TIME into place, and starts the server with
  `restore_command` reading the archive and `recovery_target_time = TIME` (none when TIME is at
  or past the newest archived WAL: the whole archive is replayed),
  `recovery_target_action = promote`; it returns once the server accepts writes.

An object store instead of the directory is not built: the archive_command and the backup
directory are plain paths (a `aws s3 cp`/`gsutil cp` archive_command is the documented next step,
docs/reliability.md); in Kubernetes, CloudNativePG's barman-cloud does both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from opsmantik.devstack.stack import PG_USER, START_TIMEOUT_S, Stack, StackError, _as_pg_owner, pg_bin
from opsmantik.errors import Refused

RECOVERY_CONF = "opsmantik-restore.conf"  # included from postgresql.auto.conf during a restore


@dataclass(frozen=True)
class Backup:
    path: Path
    started: datetime
    finished: datetime


def archive_dir(stack: Stack) -> Path:
    return stack.pg_root() / "wal-archive"


def backups_dir(stack: Stack) -> Path:
    return stack.pg_root() / "backups"


def _run(cmd: list[str]) -> None:
    done = subprocess.run(_as_pg_owner(cmd), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise StackError(f"{Path(cmd[0]).name} failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def take_backup(stack: Stack) -> Backup:
    """pg_basebackup of the running server (WAL streamed alongside, so the copy is consistent on
    its own); waits for the backup's last WAL segment to be archived."""
    if not stack.pg_status().running:
        raise StackError("Postgres is not running: start it with `opsmantik stack up`")
    started = datetime.now(UTC)
    target = backups_dir(stack) / started.strftime("%Y%m%dT%H%M%S.%fZ")
    _run([str(pg_bin() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", PG_USER,
          "-D", str(target), "-X", "stream", "-c", "fast"])  # fmt: skip
    finished = datetime.now(UTC)  # after pg_backup_stop: the backup is consistent at or before this
    marker = {"started": started.isoformat(), "finished": finished.isoformat()}
    (backups_dir(stack) / f"{target.name}.json").write_text(json.dumps(marker))
    return Backup(target, started, finished)


def backups(stack: Stack) -> list[Backup]:
    """Every finished backup, oldest first (a backup without its marker did not finish)."""
    found = []
    for marker in sorted(backups_dir(stack).glob("*.json")):
        data = json.loads(marker.read_text())
        path = marker.with_suffix("")
        if path.is_dir():
            found.append(
                Backup(
                    path, datetime.fromisoformat(data["started"]), datetime.fromisoformat(data["finished"])
                )
            )
    return sorted(found, key=lambda b: b.finished)


def newest_archived(stack: Stack) -> datetime | None:
    """When the newest WAL segment reached the archive: nothing committed after it is restorable."""
    files = [p for p in archive_dir(stack).glob("*") if p.is_file()] if archive_dir(stack).exists() else []
    if not files:
        return None
    return datetime.fromtimestamp(max(p.stat().st_mtime for p in files), UTC)


def newest_restorable(stack: Stack) -> datetime | None:
    """The newest point a restore reaches: the newest archived WAL, if a backup precedes it."""
    done = backups(stack)
    if not done:
        return None
    wal = newest_archived(stack)
    return max(done[-1].finished, wal) if wal else done[-1].finished


def choose(stack: Stack, to: datetime) -> Backup:
    """The newest backup that finished at or before `to`; Refused, naming the oldest, if none."""
    done = backups(stack)
    before = [b for b in done if b.finished <= to]
    if not before:
        oldest = done[0].finished.isoformat(timespec="seconds") if done else None
        raise Refused(
            f"no base backup finished at or before {to.isoformat(timespec='seconds')}: "
            + (f"the oldest finished at {oldest}" if oldest else f"none in {backups_dir(stack)}")
            + "; take one with `opsmantik backup` (a restore can only go forward from a backup)"
        )
    newest = newest_restorable(stack)
    if newest is not None and to > newest:
        raise Refused(
            f"{to.isoformat(timespec='seconds')} is after the newest restorable point "
            f"{newest.isoformat(timespec='seconds')} (the newest archived WAL): nothing after it can be "
            "restored from the archive"
        )
    return before[-1]


def restore(stack: Stack, to: datetime) -> Backup:
    """Point-in-time restore into the stack's data directory (the old one is moved aside)."""
    chosen = choose(stack, to)
    stack.pg_down()
    data = stack.pg_data()
    if data.exists():
        aside = data.with_name(f"data.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
        data.rename(aside)
    _run(["cp", "-a", str(chosen.path), str(data)])
    # The stack keeps its socket in the data directory: the copy holds the old server's lock file.
    for lock in data.glob(".s.PGSQL.*"):
        lock.unlink()
    conf = f"restore_command = 'cp {archive_dir(stack)}/%f %p'\n"
    newest = newest_archived(stack)
    if newest is None or to < newest:
        conf += f"recovery_target_time = '{to.isoformat()}'\nrecovery_target_action = 'promote'\n"
    # else: to the end of the archive. A target at the newest segment's arrival time is later than
    # its last commit, and PostgreSQL refuses a target it never reaches ("recovery ended before
    # configured recovery target was reached"): found by tests/integration/test_recovery_window.py.
    _write_owned(data / RECOVERY_CONF, conf)
    _write_owned(data / "recovery.signal", "")
    auto = data / "postgresql.auto.conf"
    _write_owned(auto, auto.read_text() + f"include_if_exists = '{RECOVERY_CONF}'\n")
    stack.pg_up()
    _wait_promoted(stack)
    # Recovery is over: the target must not apply to the next start (it would refuse to start).
    _run(["rm", "-f", str(data / RECOVERY_CONF)])
    return chosen


def _write_owned(path: Path, text: str) -> None:
    """Files in the data directory belong to the server's user (`postgres` when we run as root)."""
    path.write_text(text)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _wait_promoted(stack: Stack) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if stack.psql("SELECT pg_is_in_recovery()") == "f":
                return
        except subprocess.CalledProcessError:
            pass  # still starting
        time.sleep(0.2)
    raise StackError(f"restored server still in recovery after {START_TIMEOUT_S:.0f}s; see its log")
