"""Fixtures of the reliability scenarios: their sizes, their result rows, workers and an operator.

The short sizes run in the normal suite; `NSQ_SOAK=1` picks the long ones (see support.Sizes). There
is no skip: every scenario always runs, only its size changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.operators import CRD, Namespace, operated
from tests.reliability.support import Sizes, sizes
from tests.rig.kube import KubeCluster
from tests.rig.reporting import attach_logs


@pytest.fixture
def scale() -> Sizes:
    """The sizes of this run: short in the normal suite, long with NSQ_SOAK=1."""
    return sizes()


def install_crd(kube: KubeCluster) -> None:
    kube.kubectl("apply", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/nsqconsumers.nsqoperator.dev")


@pytest.fixture(scope="session")
def reliability_crd(kube_cluster: KubeCluster) -> KubeCluster:
    install_crd(kube_cluster)
    return kube_cluster


@pytest.fixture
def operator_ns(
    reliability_crd: KubeCluster, kube_namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Namespace]:
    """A fresh namespace on the session's control plane with one operator watching it."""
    attach_logs(request, [tmp_path / "operator"])
    with operated(reliability_crd, kube_namespace, tmp_path / "operator") as namespace:
        yield namespace


@pytest.fixture
def private_ns(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Namespace]:
    """A control plane of the test's own, with the CRD and a namespace: for restarting the API server
    (which would disturb the session's other tests) or loading it heavily. The operators the test
    starts with `start_operator()` are stopped afterwards."""
    kube = KubeCluster.start(tmp_path / "kube")
    attach_logs(request, [kube.log_dir, tmp_path / "operator"])
    ns = Namespace(kube, "reliability", tmp_path / "operator")
    try:
        install_crd(kube)
        kube.kubectl("create", "namespace", ns.name)
        yield ns
    finally:
        for process in ns.operators:
            process.stop()
        kube.stop()
