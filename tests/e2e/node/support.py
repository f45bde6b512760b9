"""What the real-node tests share: NsqConsumers placed on the node, their pods, and counting messages."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.rig.helm import CHART, helm
from tests.rig.kube import KubeCluster
from tests.rig.node import NODE_LABEL, RealNode, placement, toleration
from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.procs import RigError
from tests.rig.reporting import LOG_PATHS
from tests.rig.watch import KubectlWatch

OPERATOR_RELEASE = "nsq-operator"
CONSUMER_LABEL = "nsqoperator.dev/consumer"
# Small enough that several workers and the operator (100m) fit on the node's 2 CPUs.
SMALL = {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}


@dataclass
class Operator:
    """The operator installed by the chart, running as a pod."""

    kube: KubeCluster
    namespace: str

    def pods(self) -> list[dict[str, Any]]:
        """The operator's pods that are not being deleted (the chart runs two)."""
        pods = self.kube.get_json(
            "pods", "-n", self.namespace, "-l", f"app.kubernetes.io/instance={OPERATOR_RELEASE}"
        )["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def holder(self) -> str:
        """The pod name the leader Lease names (its identity is `<pod>/<pid>`), '' when none."""
        lease = self.kube.get_json("lease", OPERATOR_RELEASE, "-n", self.namespace)
        return str(lease["spec"].get("holderIdentity") or "").split("/")[0]

    def pod(self) -> dict[str, Any]:
        """The leader's pod."""
        holder = self.holder()
        pods = self.pods()
        leading = [p for p in pods if p["metadata"]["name"] == holder]
        if len(leading) != 1:
            raise RigError(
                f"no operator pod holds the Lease ({holder!r}); pods: {[p['metadata']['name'] for p in pods]}"
            )
        return leading[0]

    def logs(self) -> str:
        name = self.pod()["metadata"]["name"]
        return self.kube.kubectl("logs", name, "-n", self.namespace, check=False).stdout

    def save_logs(self, request: pytest.FixtureRequest) -> None:
        """Keep the operator's log beside the test's, for the report of a failing test."""
        log = self.kube.log_dir / f"operator-pod-{self.namespace}.log"
        log.write_text(self.logs())
        request.node.stash[LOG_PATHS] = [*request.node.stash.get(LOG_PATHS, []), log]


def restricted_namespace(kube: KubeCluster, name: str) -> str:
    """Make a namespace that enforces the `restricted` Pod Security standard, as a team's would."""
    kube.kubectl("create", "namespace", name)
    kube.kubectl(
        "label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    return name


@contextlib.contextmanager
def team_namespace(kube: KubeCluster) -> Iterator[str]:
    """A restricted namespace for one test's NsqConsumers; they and it are deleted afterwards."""
    name = restricted_namespace(kube, f"w-{uuid.uuid4().hex[:8]}")
    try:
        yield name
    finally:
        kube.kubectl("delete", "nsqc", "--all", "-n", name, "--wait=false", check=False)
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def install_operator(
    kube: KubeCluster, namespace: str, worker_image: str, timeout: str = "180s", chart: Path = CHART
) -> Operator:
    """`helm install` the chart so the operator runs as a pod on the real node, in a namespace that
    enforces the `restricted` Pod Security standard (made here)."""
    restricted_namespace(kube, namespace)
    # --take-ownership: of the CRD, which earlier tests and releases made (a chart of before 0.2.0
    # has no template for it and ignores the flag).
    helm(
        "install", OPERATOR_RELEASE, str(chart), "-n", namespace, "--wait", f"--timeout={timeout}",
        "--take-ownership", *node_values(worker_image), kubeconfig=kube.kubeconfig,
    )  # fmt: skip
    return Operator(kube, namespace)


def node_values(worker_image: str) -> list[str]:
    """The chart values that put the operator's pods on the real node, with the rig's images."""
    tol = toleration()
    return [
        "--set", "image.tag=test", "--set", "image.pullPolicy=Never",
        "--set", f"worker.defaultImage={worker_image}",
        "--set", f"nodeSelector.{NODE_LABEL.replace('.', chr(92) + '.')}=real",
        "--set", f"tolerations[0].key={tol['key']}", "--set", "tolerations[0].operator=Exists",
        "--set", "tolerations[0].effect=NoSchedule",
    ]  # fmt: skip


def uninstall_operator(operator: Operator) -> None:
    kubeconfig = operator.kube.kubeconfig
    helm(
        "uninstall", OPERATOR_RELEASE, "-n", operator.namespace, "--wait", kubeconfig=kubeconfig, check=False
    )
    operator.kube.kubectl("delete", "namespace", operator.namespace, "--wait=false", check=False)


def consumer(
    name: str,
    nsq: NsqCluster,
    topic: str,
    channel: str = "pods",
    worker: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An NsqConsumer whose workers run on the real node, with a 1 s poll and a short grace.

    A `worker` key set to None is left out (say, `args` for an image whose CMD names its handler).
    """
    merged = {
        "resources": SMALL,
        "args": ["nsq_worker.examples:NoopWorker"],
        "imagePullPolicy": "Never",
        **placement(),
        **(worker or {}),
    }
    body: dict[str, Any] = {
        "apiVersion": "nsqoperator.dev/v1alpha1",
        "kind": "NsqConsumer",
        "metadata": {"name": name},
        "spec": {
            "topic": topic,
            "channel": channel,
            "lookupd": {"httpAddresses": nsq.lookupd_http_urls, "pollIntervalSeconds": 1},
            "nsqdRemovalGraceSeconds": 3,
            "worker": {key: value for key, value in merged.items() if value is not None},
            **spec,
        },
    }
    return body


def apply(kube: KubeCluster, namespace: str, body: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def pods(kube: KubeCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The live pods of one NsqConsumer's workers (not those being deleted)."""
    items = kube.get_json("pods", "-n", namespace, "-l", f"{CONSUMER_LABEL}={name}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_ready_pods(
    kube: KubeCluster, namespace: str, name: str, count: int, timeout: float = 120
) -> list[dict[str, Any]]:
    """Wait until `count` pods of the consumer are Ready (the kubelet's probes passed)."""
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        nonlocal found
        found = [p for p in pods(kube, namespace, name) if ready(p)]
        return len(found) == count and len(pods(kube, namespace, name)) == count

    kube.wait_for(enough, timeout=timeout, what=f"{count} Ready worker pods of {name}")
    return found


def container_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def metric(pod: dict[str, Any], name: str, port: int = 8080) -> float:
    """One counter from a worker pod's /metrics, read at the pod's own address on the bridge."""
    ip = pod["status"]["podIP"]
    text = requests.get(f"http://{ip}:{port}/metrics", timeout=5).text
    match = re.search(rf"^nsq_worker_{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE)
    if match is None:
        raise RigError(f"no nsq_worker_{name} in the metrics of {pod['metadata']['name']}")
    return float(match.group(1))


def publish(nsqd: Nsqd, topic: str, start: int, count: int) -> list[bytes]:
    bodies = [json.dumps({"n": n, "kind": "test"}).encode() for n in range(start, start + count)]
    nsqd.publish(topic, bodies)
    return bodies


def channel_empty(nsqd: Nsqd, topic: str, channel: str, at_least: int) -> Callable[[], bool]:
    """nsqd delivered at least `at_least` messages and holds none (no depth, none in flight or deferred).

    nsqd forgets a message only on FIN, so this is "every message was handled": nothing lost.
    """

    def check() -> bool:
        stats = nsqd.channel_stats(topic, channel)
        return (
            stats.get("message_count", 0) >= at_least
            and stats.get("depth", 1) == 0
            and stats.get("in_flight_count", 1) == 0
            and stats.get("deferred_count", 1) == 0
        )

    return check


class PodWatch(KubectlWatch):
    """Every state the API server reports for some pods, from `kubectl get -w`, kept to the end.

    A deleted pod's last status (its container's exit code and reason) is gone from a plain GET by
    the time a test looks; the watch saw it before the DELETED event.
    """

    def __init__(self, kube: KubeCluster, namespace: str, selector: str, path: Path) -> None:
        super().__init__(kube, ["pods", "-n", namespace, "-l", selector], path)

    def terminations(self) -> dict[str, dict[str, Any]]:
        """The last `terminated` state seen for each pod's worker container, by pod name."""
        last: dict[str, dict[str, Any]] = {}
        for event in self.events():
            pod = event["object"]
            state = container_status(pod).get("state", {})
            if "terminated" in state:
                last[pod["metadata"]["name"]] = state["terminated"]
        return last

    def deleted(self) -> set[str]:
        return {e["object"]["metadata"]["name"] for e in self.events() if e["type"] == "DELETED"}


def container_pids(node: RealNode, pod: dict[str, Any]) -> list[int]:
    """The host PIDs of a pod's worker container, from its cgroup (what the kernel says runs there)."""
    container_id = container_status(pod)["containerID"].split("://", 1)[1]
    procs = node.container_cgroup(container_id, "pids") / "cgroup.procs"
    return [int(pid) for pid in procs.read_text().split()]
