"""What the real-node tests share: NsqConsumers placed on the node, their pods, and counting messages."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.rig.kube import KubeCluster
from tests.rig.node import placement
from tests.rig.nsq import Nsqd, NsqCluster
from tests.rig.procs import RigError
from tests.rig.reporting import LOG_PATHS

OPERATOR_RELEASE = "nsq-operator"
CONSUMER_LABEL = "nsqoperator.dev/consumer"
# Small enough that several workers and the operator (100m) fit on the node's 2 CPUs.
SMALL = {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}


@dataclass
class Operator:
    """The operator installed by the chart, running as a pod."""

    kube: KubeCluster
    namespace: str

    def pod(self) -> dict[str, Any]:
        pods = self.kube.get_json(
            "pods", "-n", self.namespace, "-l", f"app.kubernetes.io/instance={OPERATOR_RELEASE}"
        )["items"]
        running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if len(running) != 1:
            raise RigError(f"expected one operator pod, found {[p['metadata']['name'] for p in pods]}")
        return running[0]

    def logs(self) -> str:
        name = self.pod()["metadata"]["name"]
        return self.kube.kubectl("logs", name, "-n", self.namespace, check=False).stdout

    def save_logs(self, request: pytest.FixtureRequest) -> None:
        """Keep the operator's log beside the test's, for the report of a failing test."""
        log = self.kube.log_dir / f"operator-pod-{self.namespace}.log"
        log.write_text(self.logs())
        request.node.stash[LOG_PATHS] = [*request.node.stash.get(LOG_PATHS, []), log]


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


def wait_ready_pods(kube: KubeCluster, namespace: str, name: str, count: int, timeout: float = 120) -> list[dict[str, Any]]:  # fmt: skip
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
