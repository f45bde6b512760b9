"""Fixtures of the operator's integration tests: the CRD installed once, and a watched namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.operators import Namespace, install_crd, operated
from tests.rig.kube import KubeCluster
from tests.rig.reporting import attach_logs


@pytest.fixture(scope="session")
def crd(kube_cluster: KubeCluster) -> Path:
    return install_crd(kube_cluster)


@pytest.fixture
def ns(
    crd: Path, kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Namespace]:
    """A namespace with one operator watching it."""
    attach_logs(request, [tmp_path / "operator"])
    with operated(kube_cluster, kube_namespace, tmp_path / "operator") as namespace:
        yield namespace
