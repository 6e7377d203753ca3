"""Debian's headless Chromium (installed by scripts/ensure-observability.sh) from tests: a
screenshot at a viewport width, and the DOM as the browser parsed it. No JavaScript needed."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

TIMEOUT_S = 40.0


def binary() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium not found: run `bash scripts/ensure-observability.sh` (make deps does)")
    return path


def _run(url: str, width: int, height: int, *extra: str) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory(prefix="opsmantik-chromium-") as profile:
        # --no-sandbox: CI runs as root; the page is our own.
        argv = [
            binary(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            *extra,
            url,
        ]
        return subprocess.run(argv, capture_output=True, timeout=TIMEOUT_S, check=False)


def screenshot(url: str, out: Path, width: int, height: int, dark: bool = False) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    run = _run(url, width, height, f"--screenshot={out}", *(["--force-dark-mode"] if dark else []))
    if not out.exists():
        raise AssertionError(f"chromium wrote no screenshot (exit {run.returncode}): {run.stderr[-2000:]!r}")
    return out


def dom(url: str, width: int) -> str:
    run = _run(url, width, 800, "--dump-dom")
    if run.returncode != 0:
        raise AssertionError(f"chromium --dump-dom failed ({run.returncode}): {run.stderr[-2000:]!r}")
    return run.stdout.decode()


def png_size_and_pixel(path: Path, x: int, y: int) -> tuple[int, int, tuple[int, int, int]]:
    """(width, height, RGB at x,y) of an 8-bit RGB/RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    for row in range(y + 1):  # unfilter rows up to y
        f, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
    px = prev[x * channels : x * channels + 3]
    return width, height, (px[0], px[1], px[2])
