"""RELIABILITY.md's renderer keeps a run's section that this machine has no rows for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import report
from tests.reliability.support import RESULTS_ENV, Row, write_row

EARLIER = (
    "# Reliability\n\nintro\n\n## Soak run (the long sizes, NSQ_SOAK=1)\n\nProduced on 2026-12-02.\n\n"
    "| # | scenario |\n| 1 | old soak row |\n\n## Short run (the sizes of the normal test suite)\n\n"
    "| 1 | old short row |\n\n## Operations (issue 16): hand-written\n\nstale\n"
)


def test_sections_are_found_by_their_titles() -> None:
    found = report.sections_of(EARLIER)
    assert set(found) == {"soak", "short"}
    assert "old soak row" in found["soak"]
    assert "old short row" not in found["soak"]
    assert "stale" not in found["short"]  # a section ends where the next heading starts


def test_rows_replace_their_run_and_a_run_without_rows_keeps_its_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path))
    write_row(Row(order=1, section="Messages", scenario="new short row", outcome="passed", mode="short",
                  finished_at="2026-12-06 18:00 UTC", commit="abc1234"))  # fmt: skip
    text = report.render(("soak", "short"), EARLIER)
    assert "old soak row" in text  # no soak rows here: kept as it was
    assert "new short row" in text
    assert "old short row" not in text
    assert "stale" not in text
    assert text.index("## Soak run") < text.index("## Short run")
