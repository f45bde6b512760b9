"""Which logs to print under a failing test: fixtures and tests register them here."""

from __future__ import annotations

from pathlib import Path

import pytest

LOG_PATHS = pytest.StashKey[list[Path]]()


def attach_logs(request: pytest.FixtureRequest, paths: list[Path]) -> None:
    """Have these logs (files, or folders of *.log) printed if the test fails."""
    request.node.stash.setdefault(LOG_PATHS, []).extend(paths)
