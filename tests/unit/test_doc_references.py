"""Every repository path named in the docs and in code comments exists: a doc that names a file
that was renamed or never written (services/opsmantik/worker/watchdog.py once named a test that did not
exist) fails here."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATH = re.compile(
    r"(?<![\w./-])((?:tests|services|schemas|deploy|docs|scripts)/[\w./-]*\w"
    r"\.(?:py|md|sql|json|yaml|toml|sh|lua))"
)
PLACEHOLDERS = ("NNNN",)


def named_paths() -> dict[str, set[str]]:
    sources = [
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "services").rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        ROOT / "Makefile",
    ]
    found: dict[str, set[str]] = {}
    for source in sources:
        if "schemas" in source.relative_to(ROOT).parts[1:2]:
            continue
        for match in PATH.finditer(source.read_text(errors="replace")):
            found.setdefault(match[1], set()).add(str(source.relative_to(ROOT)))
    return found


def test_the_scan_finds_paths() -> None:
    assert "services/opsmantik/config.py" in named_paths()


def test_every_named_path_exists() -> None:
    missing = {
        p: sorted(where)
        for p, where in named_paths().items()
        if not any(x in p for x in PLACEHOLDERS) and not (ROOT / p).exists()
    }
    assert missing == {}
