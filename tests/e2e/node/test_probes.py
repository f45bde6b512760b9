"""On the real node, the worker's probes as the kubelet runs them.

Liveness means "the process and its loop are alive", readiness "subscribed and not draining": an nsqd
that is down for three minutes makes the worker unready, never restarted, and it resumes by itself.
"""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Images
from tests.e2e.node.support import (
    Operator,
    apply,
    channel_empty,
    consumer,
    container_status,
    pods,
    publish,
    ready,
    wait_ready_pods,
)
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster

OUTAGE_SECONDS = 180


def test_an_nsqd_outage_makes_the_worker_unready_not_restarted_and_it_resumes(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images,
) -> None:  # fmt: skip
    nsqd = pod_nsq.nsqds[0]
    nsqd.create_topic("outage", "pods")
    # A long grace: the operator keeps the Deployment of an nsqd that lookupd stopped listing.
    apply(kube_cluster, worker_ns, consumer("patient", pod_nsq, "outage", nsqdRemovalGraceSeconds=900))
    [pod] = wait_ready_pods(kube_cluster, worker_ns, "patient", count=1)
    container = pod["spec"]["containers"][0]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"  # slow setups are covered
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"

    nsqd.stop()

    def current() -> dict[str, Any]:
        [found] = pods(kube_cluster, worker_ns, "patient")
        return found

    kube_cluster.wait_for(lambda: not ready(current()), timeout=60, what="the worker unready without nsqd")
    deadline = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < deadline:  # the kubelet probes all along; nothing may restart it
        status = container_status(current())
        assert status.get("restartCount") == 0, status
        assert "running" in status.get("state", {}), status
        assert not ready(current()), "ready with nsqd down"
        time.sleep(5)

    nsqd.start()  # the same ports and data directory: the worker reconnects by itself
    kube_cluster.wait_for(lambda: ready(current()), timeout=90, what="Ready again")
    again = current()
    assert again["metadata"]["uid"] == pod["metadata"]["uid"]
    assert container_status(again)["restartCount"] == 0
    publish(nsqd, "outage", 0, 200)
    handled = channel_empty(nsqd, "outage", "pods", 200)
    kube_cluster.wait_for(handled, timeout=60, what="the messages published after the outage handled")
