"""On the real node: the chart's operator runs as a pod and its workers run as pods and consume.

The operator pod is installed by `helm install` into a namespace that enforces the `restricted` Pod
Security standard; it talks to the API server only through the `kubernetes` Service with its
ServiceAccount token (no kubeconfig anywhere), and the kubelet runs its probes.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import USER_IMAGE, Images
from tests.e2e.node.support import (
    Operator,
    apply,
    channel_empty,
    consumer,
    container_pids,
    container_status,
    metric,
    publish,
    ready,
    wait_ready_pods,
)
from tests.rig.kube import KubeCluster
from tests.rig.node import RealNode
from tests.rig.nsq import NsqCluster


def test_the_operator_runs_as_a_restricted_pod_with_in_cluster_credentials(
    kube_cluster: KubeCluster, operator_pod: Operator, real_node: RealNode
) -> None:
    pod = operator_pod.pod()
    assert pod["spec"]["nodeName"] == real_node.name
    assert ready(pod), pod["status"]  # the kubelet's readiness probe on /healthz passed
    status = container_status(pod)
    assert status["restartCount"] == 0, status  # and liveness never failed
    assert "running" in status["state"]
    env = {e["name"] for e in pod["spec"]["containers"][0].get("env", [])}
    assert "KUBECONFIG" not in env
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0].get("volumeMounts", [])}
    assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts  # the projected token
    namespace = kube_cluster.get_json("namespace", operator_pod.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    logs = operator_pod.logs()
    assert "at https://10.96.0.1:443 with the in-cluster ServiceAccount token" in logs, logs[-2000:]
    assert "Forbidden" not in logs


@pytest.mark.parametrize("pod_nsq", [{"nsqd": 2}], indirect=True)
@pytest.mark.parametrize(
    ("image", "args"),
    [(None, ["nsq_worker.examples:NoopWorker"]), (USER_IMAGE, None)],
    ids=["worker-image", "user-image"],
)
def test_worker_pods_consume_every_message_from_real_nsqd(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images, real_node: RealNode, image: str | None, args: list[str] | None,
) -> None:  # fmt: skip
    topic = "pods"
    for nsqd in pod_nsq.nsqds:
        nsqd.create_topic(topic, "pods")
    # args None: the user image's own CMD names its handler.
    worker = {"image": image or node_images.worker, "args": args}
    apply(kube_cluster, worker_ns, consumer("orders", pod_nsq, topic, worker=worker))
    running = wait_ready_pods(kube_cluster, worker_ns, "orders", count=2)
    assert {p["spec"]["nodeName"] for p in running} == {real_node.name}
    per_nsqd = 500
    for index, nsqd in enumerate(pod_nsq.nsqds):
        publish(nsqd, topic, index * per_nsqd, per_nsqd)
    for nsqd in pod_nsq.nsqds:
        kube_cluster.wait_for(
            channel_empty(nsqd, topic, "pods", per_nsqd), timeout=90, what=f"{nsqd.name} drained by its pod"
        )
    finished = [metric(p, "messages_finished_total") for p in running]
    assert all(count >= per_nsqd for count in finished), finished  # each pod took its own nsqd's share
    assert sum(finished) >= 2 * per_nsqd

    def reported() -> bool:
        status = kube_cluster.get_json("nsqc", "orders", "-n", worker_ns).get("status", {})
        return bool(status.get("readyWorkers") == 2 and status.get("nsqdCount") == 2)

    kube_cluster.wait_for(reported, timeout=30, what="the NsqConsumer reporting 2 ready workers")


LEASE_DURATION = 15.0


@pytest.mark.parametrize("pod_nsq", [{"nsqd": 2}], indirect=True)
@pytest.mark.parametrize("how", ["delete", "sigkill"])
def test_the_standby_pod_takes_over_while_producers_come_and_go(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images, real_node: RealNode, how: str,
) -> None:  # fmt: skip
    """Two operator pods; the leader's is deleted (or its process SIGKILLed on the node) while an nsqd
    joins and one leaves: the standby takes over within the lease and ends with one worker per nsqd."""
    kube_cluster.wait_for(lambda: len([p for p in operator_pod.pods() if ready(p)]) == 2, timeout=120,
                          what="two ready operator pods")  # fmt: skip
    topic = f"failover-{how}"
    for nsqd in pod_nsq.nsqds:
        nsqd.create_topic(topic, "pods")
    apply(kube_cluster, worker_ns, consumer("orders", pod_nsq, topic, worker={"image": node_images.worker}))
    wait_ready_pods(kube_cluster, worker_ns, "orders", count=2)
    leader_pod = operator_pod.pod()
    leader = leader_pod["metadata"]["name"]

    joined = pod_nsq.add_nsqd()
    joined.create_topic(topic, "pods")
    left = pod_nsq.nsqds[0]
    left.stop()
    started = time.monotonic()
    if how == "delete":
        kube_cluster.kubectl("delete", "pod", leader, "-n", operator_pod.namespace, "--wait=false")
    else:
        for pid in container_pids(real_node, leader_pod):
            os.kill(pid, signal.SIGKILL)

    def taken_over() -> bool:
        holder = operator_pod.holder()
        return bool(holder) and holder != leader

    if how == "delete":
        kube_cluster.wait_for(taken_over, timeout=LEASE_DURATION + 10, what="the standby holding the Lease")
    else:  # the kubelet restarts the killed container in its pod, which may win the Lease back
        kube_cluster.wait_for(
            lambda: operator_pod.holder() != "", timeout=LEASE_DURATION + 10, what="a leader"
        )
    took = time.monotonic() - started
    assert took <= LEASE_DURATION + 7, f"no leader for {took:.1f} s"

    wanted = sorted(n.tcp_address for n in pod_nsq.nsqds if n is not left)

    def one_per_nsqd() -> bool:
        deployments = kube_cluster.get_json(
            "deployments", "-n", worker_ns, "-l", "nsqoperator.dev/consumer=orders"
        )["items"]
        return (
            sorted(d["metadata"]["annotations"]["nsqoperator.dev/nsqd-address"] for d in deployments)
            == wanted
        )

    kube_cluster.wait_for(one_per_nsqd, timeout=60, what="one Deployment per nsqd after the failover")
    wait_ready_pods(kube_cluster, worker_ns, "orders", count=len(wanted))
    events = kube_cluster.get_json("events", "-n", worker_ns)["items"]
    created = [
        e for e in events if e["reason"] == "DeploymentCreated" and e["involvedObject"]["name"] == "orders"
    ]
    assert len(created) == 3, [e["message"] for e in created]  # two at first, one for the newcomer
