"""The Kubernetes demo, on the rig's real node: the operator as a pod, worker pods consuming.

What is real: etcd, kube-apiserver, kube-controller-manager (garbage collection, ReplicaSets),
kube-scheduler, a kubelet with containerd and runc running every pod, kube-proxy (the operator
reaches the API server through the `kubernetes` Service), helm, nsqd and nsqlookupd. What is not
like production: one node, on this machine; images built here and loaded into the node's containerd
(no registry); pods confined to the machine by iptables.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from demo.narrate import say
from tests.e2e.node.support import (
    CONSUMER_LABEL,
    consumer,
    container_pids,
    container_status,
    install_operator,
    metric,
    pods,
    ready,
)
from tests.rig import docker, hostnet
from tests.rig.kube import KubeCluster
from tests.rig.node import RealNode
from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.tools import PROJECT_ROOT

TOPIC, CHANNEL, CONSUMER, NAMESPACE = "demo", "workers", "demo", "demo"
SYSTEM = "nsq-system"
WORKER_IMAGE, OPERATOR_IMAGE = "nsq-operator/worker:test", "nsq-operator/operator:test"


def show(kube: KubeCluster, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}")
    result = kube.kubectl(*args, check=False)
    print((result.stdout or result.stderr).rstrip())


def show_state(kube: KubeCluster) -> None:
    show(kube, "get", "nsqc", "-n", NAMESPACE)
    show(kube, "get", "pods", "-n", NAMESPACE, "-l", f"{CONSUMER_LABEL}={CONSUMER}", "-o", "wide")


def ready_pods(kube: KubeCluster) -> list[dict[str, Any]]:
    return [p for p in pods(kube, NAMESPACE, CONSUMER) if ready(p)]


def deployment_count(kube: KubeCluster) -> int:
    return len(kube.get_json("deployments", "-n", NAMESPACE, "-l", f"{CONSUMER_LABEL}={CONSUMER}")["items"])


def show_counts(kube: KubeCluster) -> None:
    """Messages each worker pod has finished, read from its own /metrics on the pod network."""
    for pod in sorted(ready_pods(kube), key=lambda p: p["metadata"]["name"]):
        nsqd = pod["metadata"]["annotations"].get("nsqoperator.dev/nsqd-address", "?")
        finished = metric(pod, "messages_finished_total")
        restarts = container_status(pod).get("restartCount", 0)
        print(
            f"  pod {pod['metadata']['name']:<40} nsqd {nsqd:<18} "
            f"finished {finished:>7.0f}  restarts {restarts}"
        )


class Publisher:
    """A steady stream of small messages to every live nsqd, in a background thread."""

    def __init__(self, nsq: NsqCluster, rate: int = 200) -> None:
        self.nsq, self.rate, self.sent = nsq, rate, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for nsqd in list(self.nsq.nsqds):
                if nsqd.process is not None and nsqd.process.alive():
                    try:
                        self.sent += nsqd.publish(TOPIC, [b'{"demo": 1}'] * (self.rate // 2))
                    except Exception:
                        continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def body(nsq: NsqCluster, grace: float) -> dict[str, Any]:
    spec = consumer(CONSUMER, nsq, TOPIC, CHANNEL, worker={"args": ["nsq_worker.examples:CountingWorker"]})
    spec["metadata"]["namespace"] = NAMESPACE
    spec["spec"]["nsqdRemovalGraceSeconds"] = int(grace)
    return spec


def run(short: bool = False) -> int:
    grace = 3.0 if short else 8.0
    root = Path(tempfile.mkdtemp(prefix="nsq-operator-kube-demo-"))
    nsq: NsqCluster | None = None
    kube: KubeCluster | None = None
    node: RealNode | None = None
    publisher: Publisher | None = None
    try:
        say("Starting a Kubernetes cluster on this machine: etcd, kube-apiserver, kube-controller-manager,\n"
            "    kube-scheduler, and one real node (a kubelet with containerd and runc, kube-proxy, a\n"
            "    CNI bridge whose traffic iptables keeps on this machine). And NSQ.")  # fmt: skip
        kube = KubeCluster.start(root / "kube")
        docker.ensure_engine(root / "docker")
        base = docker.ensure_base_image(root / "docker")
        say("Building the worker and operator images (cached after the first run) and loading them into\n"
            "    the node's containerd: no registry is asked.")  # fmt: skip
        docker.build_image("worker", WORKER_IMAGE, base, PROJECT_ROOT)
        docker.build_image("operator", OPERATOR_IMAGE, base, PROJECT_ROOT)
        node = RealNode.start(kube.kubeconfig, kube.pki.ca_cert)
        node.load_images(WORKER_IMAGE, OPERATOR_IMAGE)
        nsq = NsqCluster.start(root / "nsq", nsqd_count=3, host=hostnet.GATEWAY)
        for nsqd in nsq.nsqds:
            nsqd.create_topic(TOPIC, CHANNEL)

        say("helm install: the CRD, least-privilege RBAC, and the operator itself as a pod on the\n"
            "    node, in a namespace enforcing the `restricted` Pod Security standard, acting with\n"
            "    its ServiceAccount token.")  # fmt: skip
        install_operator(kube, SYSTEM, WORKER_IMAGE)
        show(kube, "get", "pods", "-n", SYSTEM, "-o", "wide")

        say(f"kubectl apply an NsqConsumer for topic {TOPIC!r}: one worker Deployment per nsqd, each pod\n"
            "    consuming from its own nsqd. A publisher sends a steady stream to every nsqd.")  # fmt: skip
        kube.kubectl("create", "namespace", NAMESPACE)
        kube.kubectl("apply", "-f", "-", input=json.dumps(body(nsq, grace)))
        publisher = Publisher(nsq)
        kube.wait_for(lambda: len(ready_pods(kube)) == 3, timeout=180, what="three Ready worker pods")
        time.sleep(3)
        show_state(kube)
        show_counts(kube)

        victim = sorted(ready_pods(kube), key=lambda p: p["metadata"]["name"])[0]
        say(f"SIGKILL the worker process of {victim['metadata']['name']} on the host: the kubelet restarts\n"
            "    its container, it resubscribes, and nsqd redelivers what it held.")  # fmt: skip
        for pid in container_pids(node, victim):
            os.kill(pid, signal.SIGKILL)
        kube.wait_for(
            lambda: any(container_status(p).get("restartCount", 0) >= 1 for p in ready_pods(kube)),
            timeout=90, what="the killed worker Ready again",
        )  # fmt: skip
        show_counts(kube)

        say("A fourth nsqd joins and gets the topic: a fourth worker pod appears.")
        added: Nsqd = nsq.add_nsqd()
        added.create_topic(TOPIC, CHANNEL)
        kube.wait_for(lambda: len(ready_pods(kube)) == 4, timeout=120, what="a fourth Ready pod")
        show_state(kube)

        leaving = nsq.nsqds[0]
        say(f"{leaving.name} shuts down. Its Deployment stays for nsqdRemovalGraceSeconds ({grace:g}s), in\n"
            "    case it comes back; then it goes, and its pod drains and exits.")  # fmt: skip
        leaving.stop()
        kube.wait_for(lambda: deployment_count(kube) == 3, timeout=90 + grace, what="the Deployment to go")
        show_state(kube)
        show_counts(kube)
        show(kube, "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={CONSUMER}",
             "--sort-by=.lastTimestamp")  # fmt: skip

        publisher.stop()
        say("kubectl delete the NsqConsumer: Kubernetes' garbage collector removes its Deployments,\n"
            "    and each pod gets SIGTERM, finishes what it holds and exits.")  # fmt: skip
        kube.kubectl("delete", "nsqc", CONSUMER, "-n", NAMESPACE, "--timeout=60s")
        kube.wait_for(lambda: deployment_count(kube) == 0, timeout=60, what="the garbage collector")
        kube.wait_for(lambda: not pods(kube, NAMESPACE, CONSUMER), timeout=90, what="the pods to drain")
        show_state(kube)
        say(f"Done: {publisher.sent} messages published, one worker pod per nsqd, following the cluster.")
        return 0
    finally:
        if publisher is not None:
            publisher.stop()
        if node is not None:
            node.stop()
        if kube is not None:
            kube.stop()
        if nsq is not None:
            nsq.stop()
        shutil.rmtree(root, ignore_errors=True)
