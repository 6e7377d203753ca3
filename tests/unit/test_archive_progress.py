"""`opsmantik archive` shows its progress on stderr (a month takes minutes), at most every every_s."""

from __future__ import annotations

import pytest
from opsmantik.billing.archive import Progress
from opsmantik.cli.show import err  # the CLI's printer: the domain only calls what it is given


def test_progress_lines_are_paced(capsys: pytest.CaptureFixture[str]) -> None:
    quiet = Progress("2026-01 written:", err, every_s=3600)
    quiet.add(65536)
    assert capsys.readouterr().err == ""
    loud = Progress("2026-01 written:", err, every_s=0)
    loud.add(65536)
    loud.add(1000)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[1].startswith("archive: 2026-01 written: 66,536 rows (")
    assert capsys.readouterr().out == ""  # stdout stays the result (--json)
