"""`opsmantik send [FILE|-] --url URL --key KEY`: backfill NDJSON through the producer client.

One event per line. Lines are handed to the client 1,000 at a time together with the input
position (a checkpoint committed in the same spill transaction), so after Ctrl-C, a crash or
an exit 3 the same command resumes: the spill's unanswered events are re-sent with their
event_ids and reading continues after the last line handed over. Nothing is sent twice with
a different id, so nothing is billed twice.

Exit: 0 every event stored; 1 some event rejected; 2 usage error (bad arguments, the key
refused); 3 the gateway unreachable (events kept in the spill); 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

CHUNK_LINES = 1000
READ_AHEAD_EVENTS = 8 * CHUNK_LINES
FINGERPRINT_BYTES = 64 * 1024


def add_arguments(
    p: argparse.ArgumentParser, count: Callable[[str], int] = int, seconds: Callable[[str], float] = float
) -> None:
    """`count` and `seconds` parse --in-flight and --give-up-after (the opsmantik CLI passes its
    validating types; this module depends on nothing of it)."""
    p.add_argument("file", nargs="?", default="-", help="NDJSON file, one event per line ('-' = stdin)")
    p.add_argument("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    p.add_argument(
        "--key",
        default=os.environ.get("OPSMANTIK_API_KEY"),
        help="site API key (default: $OPSMANTIK_API_KEY, which keeps it out of `ps`)",
    )
    p.add_argument(
        "--spill",
        help="spill file (default FILE.opsmantik-spill, or "
        "./opsmantik-send.spill for stdin); the same spill resumes an interrupted run",
    )
    p.add_argument("--rejected", help="write rejected events (NDJSON) here")
    p.add_argument("--in-flight", type=count, default=4, help="concurrent requests (default 4)")
    p.add_argument(
        "--give-up-after",
        type=seconds,
        default=300.0,
        help="exit 3 after the gateway failed for this many seconds in a row (default 300)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="read the input from its start again even if this spill says it was sent "
        "(lines without event_id get new ids: they are billed again)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # first few rejection reasons
    rejected_out: BinaryIO | None = None

    def add(self, res: Any) -> None:
        self.outcomes[res.status] += 1
        if not res.ok:
            self._reject(f"{res.event_id}: {res.error}", res.body)

    def local_reject(self, line_no: int, reason: str, raw: bytes) -> None:
        self.outcomes["rejected"] += 1
        self._reject(f"line {line_no}: {reason}", raw)

    def _reject(self, text: str, body: bytes | None) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)
        if self.rejected_out is not None and body is not None:
            self.rejected_out.write(body.rstrip(b"\n") + b"\n")

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())


@dataclass
class Input:
    stream: BinaryIO
    fingerprint: str
    total_bytes: int | None
    offset: int = 0
    line_no: int = 0
    pushed_back: bytes = b""  # stdin's first line, read for the fingerprint

    @classmethod
    def open(cls, name: str) -> Input:
        if name == "-":
            # A pipe cannot be re-read: the fingerprint is the first line, and resuming
            # trusts the caller to pipe the same input again.
            first = sys.stdin.buffer.readline()
            return cls(
                sys.stdin.buffer, "stdin:" + hashlib.sha256(first).hexdigest(), None, pushed_back=first
            )
        f = open(name, "rb")  # noqa: SIM115 - closed by _send()
        head = f.read(FINGERPRINT_BYTES)
        f.seek(0)
        # The content, not the name or mtime: a moved file resumes, a grown file resumes.
        return cls(f, "sha256-64k:" + hashlib.sha256(head).hexdigest(), os.fstat(f.fileno()).st_size)

    def skip_to(self, offset: int, line_no: int) -> None:
        if self.stream.seekable() and not self.pushed_back:
            self.stream.seek(offset)
        else:
            left = offset - len(self.pushed_back)
            self.pushed_back = b""
            while left > 0:
                got = self.stream.read(min(left, 1 << 20))
                if not got:
                    break
                left -= len(got)
        self.offset, self.line_no = offset, line_no

    def read_chunk(self) -> list[bytes]:
        lines = []
        if self.pushed_back:
            lines.append(self.pushed_back)
            self.pushed_back = b""
        while len(lines) < CHUNK_LINES:
            line = self.stream.readline()
            if not line:
                break
            lines.append(line)
        return lines


def _fail(msg: str, code: int) -> int:
    print(f"opsmantik send: {msg}", file=sys.stderr)
    return code


async def _preflight(url: str, key: str) -> int | None:
    """GET /api/usage authenticates like /api/sync and stores nothing: a wrong key or a dead
    gateway is reported before any input is read."""
    import aiohttp

    from opsmantik_client.aio import sync_url

    base = sync_url(url)[: -len("/api/sync")]
    month = datetime.now(UTC).strftime("%Y-%m")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.get(f"{base}/api/usage?month={month}", headers={"Authorization": f"Bearer {key}"}) as r,
        ):
            if r.status == 401:
                return _fail(f"the gateway at {base} refused the key (401)", 2)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return _fail(
            f"gateway unreachable at {base} ({exc.__class__.__name__}): start it with "
            "`opsmantik gateway` (or `make run`)",
            3,
        )
    return None


async def _send(args: argparse.Namespace) -> int:
    from opsmantik_client import _json
    from opsmantik_client.aio import AsyncClient
    from opsmantik_client.progress import Progress, eta_s
    from opsmantik_client.spill import SpillError

    if not args.key:
        return _fail("--key (or $OPSMANTIK_API_KEY) is required", 2)
    if args.file != "-" and not Path(args.file).is_file():
        return _fail(f"no such file: {args.file}", 2)
    failed = await _preflight(args.url, args.key)
    if failed is not None:
        return failed
    src = Input.open(args.file)
    spill = args.spill or (args.file + ".opsmantik-spill" if args.file != "-" else "opsmantik-send.spill")
    tally = Tally(rejected_out=open(args.rejected, "ab") if args.rejected else None)  # noqa: SIM115
    try:
        client = AsyncClient(
            args.url,
            args.key,
            spill_path=spill,
            receipts=False,
            on_result=tally.add,
            max_in_flight=max(1, args.in_flight),
        )
        await client.start()
    except (SpillError, ValueError, OSError) as exc:
        return _fail(str(exc), 2)
    replayed = client.pending
    cp = client.checkpoint()
    if cp.get("source") == src.fingerprint and not args.restart:
        src.skip_to(int(cp["offset"]), int(cp["line"]))
    resumed_line = src.line_no

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    progress = None if args.quiet else Progress()
    read_events = 0
    t0 = time.monotonic()

    def show(force: bool = False) -> None:
        if progress is None:
            return
        done = tally.done
        rate = done / max(1e-6, time.monotonic() - t0)
        progress.update(
            done,
            client.counters.retried,
            client.pending,
            eta_s(done, read_events, src.offset, src.total_bytes, client.pending, rate),
            force,
        )

    code = 0
    try:
        eof = False
        while not eof and not stop.is_set():
            # Read at most a few batches ahead: the spill would take the whole file, but memory
            # that is reused rather than grown is what keeps the client cheap per event.
            while not await client.wait_pending(READ_AHEAD_EVENTS, 0.25):
                show()
                if stop.is_set() or client.outage_s() > args.give_up_after:
                    break
            if stop.is_set() or client.outage_s() > args.give_up_after:
                break
            lines = await asyncio.to_thread(src.read_chunk)
            eof = len(lines) < CHUNK_LINES
            events = []
            for raw in lines:
                src.line_no += 1
                src.offset += len(raw)
                if not raw.strip():
                    continue
                try:
                    obj = _json.loads(raw)
                except (_json.DecodeError, ValueError):
                    tally.local_reject(src.line_no, "not valid JSON", raw)
                    continue
                if not isinstance(obj, dict):
                    tally.local_reject(src.line_no, "not a JSON object", raw)
                    continue
                events.append(obj)
            read_events += len(events)
            await client.send_many(
                events, {"source": src.fingerprint, "offset": str(src.offset), "line": str(src.line_no)}
            )
            show()
            if client.outage_s() > args.give_up_after:
                break
        while not stop.is_set() and client.pending and client.outage_s() <= args.give_up_after:
            await client.flush(0.25)
            show()
        show(force=True)
    finally:
        if progress is not None:
            progress.end()
        gave_up = client.outage_s() > args.give_up_after
        await client.close(timeout=5.0 if (stop.is_set() or gave_up) else 30.0)
        # The spill is kept even when empty: its checkpoint says the input was sent, so running
        # the same command again sends nothing instead of billing every line a second time.
        left = client.pending_after_close
        if tally.rejected_out is not None:
            tally.rejected_out.close()
        if src.stream is not sys.stdin.buffer:
            src.stream.close()
    elapsed = time.monotonic() - t0
    summary = {
        "events": tally.done,
        "outcomes": dict(sorted(tally.outcomes.items())),
        "rejected": tally.outcomes.get("rejected", 0),
        "retries": client.counters.retried,
        "seconds": round(elapsed, 3),
        "events_per_s": round(tally.done / max(1e-6, elapsed), 1),
        "replayed_from_spill": replayed,
        "resumed_at_line": resumed_line,
        "lines_read": src.line_no,
        "left_in_spill": left,
        "spill": spill if left else None,
        "interrupted": stop.is_set(),
        "gave_up": gave_up,
        "errors": tally.errors,
    }
    if args.json:
        print(_json.dumps(summary).decode())
    else:
        o = tally.outcomes
        print(
            f"sent {tally.done:,} events in {elapsed:.1f} s ({summary['events_per_s']:,.0f} ev/s): "
            + ", ".join(
                f"{k} {o.get(k, 0):,}" for k in ("accepted", "overlimit", "degraded", "fallback", "rejected")
            ),
            file=sys.stderr,
        )
        print(
            f"retries {client.counters.retried:,}; replayed from the spill {replayed:,}; input "
            f"resumed at line {resumed_line:,}",
            file=sys.stderr,
        )
        for e in tally.errors[:5]:
            print(f"  rejected {e}", file=sys.stderr)
    if stop.is_set():
        code = _fail(
            f"interrupted: {left:,} events kept in {spill}; run the same command again to "
            "resume (nothing is sent twice)",
            130,
        )
    elif gave_up:
        code = _fail(
            f"the gateway at {client.url} kept failing for {args.give_up_after:g} s: start it "
            f"with `opsmantik gateway`; {left:,} events kept in {spill}, run again to resume",
            3,
        )
    elif summary["rejected"]:
        code = 1
    if resumed_line and not args.json:
        print(
            f"(resumed: lines 1-{resumed_line:,} were handed over by an earlier run; --restart "
            "sends them again)",
            file=sys.stderr,
        )
    return code


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_send(args))
    except KeyboardInterrupt:  # a second Ctrl-C: the spill still holds everything unanswered
        return 130


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="opsmantik-send", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
