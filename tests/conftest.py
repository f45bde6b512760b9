"""Fixtures for the real parts: an NSQ cluster, a Kubernetes control plane and a Docker engine.

Every log a fixture's processes write is attached to the report of a failing test.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.rig.nsq import NsqCluster
from tests.rig.procs import tail

LOG_PATHS = pytest.StashKey[list[Path]]()


def attach_logs(request: pytest.FixtureRequest, paths: list[Path]) -> None:
    """Have these logs printed if the test fails."""
    request.node.stash.setdefault(LOG_PATHS, []).extend(paths)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    if getattr(report, "failed", False):
        for path in item.stash.get(LOG_PATHS, []):
            for log in sorted(path.glob("*.log")) if path.is_dir() else [path]:
                report.sections.append((f"rig log {log.name}", tail(log, 60)))  # type: ignore[attr-defined]
    return report


@pytest.fixture
def nsq_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NsqCluster]:
    """One nsqlookupd and two nsqd on loopback; `indirect` parametrisation may ask for other counts."""
    counts = getattr(request, "param", {})
    cluster = NsqCluster.start(
        tmp_path / "nsq", nsqd_count=counts.get("nsqd", 2), lookupd_count=counts.get("lookupd", 1)
    )
    attach_logs(request, [tmp_path / "nsq" / "logs"])
    try:
        yield cluster
    finally:
        cluster.stop()
