"""The real-node benchmarks' rig: the control plane, a kubelet node, nsqd on the bridge, the operator
as a pod installed by helm, all started together and stopped in reverse, whatever happens between."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.node.support import install_operator, uninstall_operator
from tests.rig import docker, hostnet
from tests.rig.kube import KubeCluster
from tests.rig.node import RealNode
from tests.rig.nsq import NsqCluster
from tests.rig.tools import PROJECT_ROOT

WORKER_IMAGE = "nsq-operator/worker:test"
OPERATOR_IMAGE = "nsq-operator/operator:test"


@contextmanager
def real_node(
    work: Path, nsqd_count: int, log: Callable[[str], None]
) -> Iterator[tuple[KubeCluster, RealNode, NsqCluster]]:
    """Images built from the work tree and loaded into the node, then the operator installed."""
    kube = KubeCluster.start(work / "kube")
    node = nsq = operator = None
    try:
        docker.ensure_engine(work / "docker")
        base = docker.ensure_base_image(work / "docker")
        log("building the worker and operator images")
        docker.build_image("worker", WORKER_IMAGE, base, PROJECT_ROOT)
        docker.build_image("operator", OPERATOR_IMAGE, base, PROJECT_ROOT)
        node = RealNode.start(kube.kubeconfig, kube.pki.ca_cert)
        node.load_images(WORKER_IMAGE, OPERATOR_IMAGE)
        nsq = NsqCluster.start(work / "nsq", nsqd_count=nsqd_count, host=hostnet.GATEWAY)
        operator = install_operator(kube, "nsq-bench-system", WORKER_IMAGE)
        yield kube, node, nsq
    finally:
        if operator is not None:
            uninstall_operator(operator)
        if nsq is not None:
            nsq.stop()
        if node is not None:
            node.stop()
        kube.stop()
