"""Fixtures for the real node: the kubelet, its images, NSQ on the bridge, and the operator as a pod.

These tests never fall back to kwok: when the real node cannot start, the `real_node` fixture fails
every test that needs it with the reason (the component's log tail).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Images
from tests.e2e.node.support import Operator, install_operator, team_namespace, uninstall_operator
from tests.rig import hostnet
from tests.rig.kube import KubeCluster
from tests.rig.node import RealNode
from tests.rig.nsq import NsqCluster
from tests.rig.reporting import attach_logs


@pytest.fixture
def pod_nsq(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NsqCluster]:
    """nsqlookupd and nsqd listening on the bridge gateway, which pods reach; `param` sets the count."""
    counts = getattr(request, "param", {})
    cluster = NsqCluster.start(tmp_path / "nsq", nsqd_count=counts.get("nsqd", 1), host=hostnet.GATEWAY)
    attach_logs(request, [cluster.log_dir])
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def operator_pod(kube_cluster: KubeCluster, node_images: Images, real_node: RealNode) -> Iterator[Operator]:
    """The chart installed by helm: the operator runs as a pod on the real node, in-cluster."""
    operator = install_operator(kube_cluster, f"nsq-system-{uuid.uuid4().hex[:6]}", node_images.worker)
    try:
        yield operator
    finally:
        uninstall_operator(operator)


@pytest.fixture
def worker_ns(
    kube_cluster: KubeCluster, operator_pod: Operator, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A namespace for one test's NsqConsumers (restricted Pod Security, as a team's would be)."""
    attach_logs(request, [kube_cluster.log_dir, Path("/var/lib/nsq-operator-rig/logs")])
    with team_namespace(kube_cluster) as name:
        yield name
        operator_pod.save_logs(request)
