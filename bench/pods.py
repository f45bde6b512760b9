"""4. Pods on the real node: from `kubectl apply` to the first message handled, and from SIGKILL to Ready.

The whole Kubernetes path, on the rig's real kubelet: the operator (a pod installed by helm) sees
the NsqConsumer, polls lookupd, creates the Deployment; the controller manager makes the ReplicaSet
and the pod; the scheduler binds it; the kubelet starts the sandbox and the worker container; the
worker subscribes and finishes the one message that was waiting on nsqd. The objects' own timestamps of
each stage are kept in results.json (one-second resolution); the totals are measured here.

The restart: the worker process is SIGKILLed on the host; the kubelet notices, restarts the
container in the same pod (no back-off for a first restart), the worker resubscribes, and the
readiness probe passes again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bench import node_rig
from bench.common import Config, summary
from tests.e2e.node.support import (
    apply,
    channel_empty,
    consumer,
    container_pids,
    container_status,
    pods,
    wait_ready_pods,
)
from tests.rig.kube import KubeCluster
from tests.rig.node import RealNode
from tests.rig.nsq import NsqCluster


def _time(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def _stages(kube: KubeCluster, namespace: str, name: str, applied: float) -> dict[str, float | None]:
    """Seconds after the apply at which each object was made or each state reached."""
    deployment = kube.get_json("deployments", "-n", namespace)["items"][0]
    [pod] = pods(kube, namespace, name)
    conditions = {c["type"]: c.get("lastTransitionTime") for c in pod["status"].get("conditions", [])}
    running = container_status(pod).get("state", {}).get("running", {}).get("startedAt")
    stamps = {
        "deployment": _time(deployment["metadata"]["creationTimestamp"]),
        "pod": _time(pod["metadata"]["creationTimestamp"]),
        "scheduled": _time(conditions.get("PodScheduled")),
        "started": _time(running),
        "ready": _time(conditions.get("Ready")),
    }
    return {k: (None if v is None else max(0.0, v - applied)) for k, v in stamps.items()}


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # an object that is not there yet
            if predicate():
                return
        time.sleep(0.05)
    raise TimeoutError(f"no {what} within {timeout:.0f} s")


def _one_run(kube: KubeCluster, node: RealNode, nsq: NsqCluster, index: int) -> dict[str, Any]:
    namespace = f"bench-{index}-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    topic = f"bench{index}"
    nsqd = nsq.nsqds[0]
    nsqd.create_topic(topic, "pods")
    nsqd.publish(topic, [b'{"first": true}'])
    try:
        body = consumer("first", nsq, topic)
        applied_wall, applied = time.time(), time.monotonic()
        apply(kube, namespace, body)
        _wait(channel_empty(nsqd, topic, "pods", 1), 180, "first message handled")
        first = time.monotonic() - applied
        stages = _stages(kube, namespace, "first", applied_wall)
        [pod] = wait_ready_pods(kube, namespace, "first", count=1)
        killed = time.monotonic()
        for pid in container_pids(node, pod):
            os.kill(pid, signal.SIGKILL)

        def ready_again() -> bool:
            status = container_status(pods(kube, namespace, "first")[0])
            return bool(status.get("restartCount", 0) >= 1 and status.get("ready"))

        _wait(ready_again, 120, "Ready again after SIGKILL")
        restart = time.monotonic() - killed
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return {"first_message": first, "restart_ready": restart, "stages": stages}


def measure(config: Config, log: Callable[[str], None]) -> dict[str, Any]:
    """Start the control plane with the real node, the operator pod and nsqd; time `repeats` runs."""
    runs: list[dict[str, Any]] = []
    with node_rig.real_node(config.work / "pods", 1, log) as (kube, node, nsq):
        repeats = max(config.repeats, 1) if config.quick else max(config.repeats, 5)
        for index in range(repeats):
            run = _one_run(kube, node, nsq, index)
            log(f"run {index + 1}/{repeats}: first message {run['first_message']:.1f} s, "
                f"SIGKILL to Ready {run['restart_ready']:.1f} s")  # fmt: skip
            runs.append(run)
    stage_names = ("deployment", "pod", "scheduled", "started", "ready")
    return {
        "first_message": summary([r["first_message"] for r in runs]),
        "restart_ready": summary([r["restart_ready"] for r in runs]),
        "stages": {
            name: summary([s for r in runs if (s := r["stages"][name]) is not None]) for name in stage_names
        },
        "runs": runs,
        "poll_interval": 1,
    }


def report(pods_result: dict[str, Any], add: Callable[[str], None]) -> None:
    """The section of BENCHMARKS.md."""

    def spread(s: dict[str, Any]) -> str:
        if not s.get("n"):
            return "n/a"
        return f"{s['median']:.1f} s (min {s['min']:.1f}, max {s['max']:.1f}, n={s['n']})"

    add("## 4. Pods on the real node\n")
    add(
        "The rig's real kubelet (containerd, runc, the CNI bridge), the operator running as a pod "
        "installed by helm, one nsqd on the bridge. Each run applies an NsqConsumer (poll interval "
        f"{pods_result.get('poll_interval', 1)} s) to a topic with one message waiting, and times until "
        "nsqd has that message finished by the new pod; then SIGKILLs the worker's process on the host and "
        "times until the kubelet has restarted the container and its readiness probe passes.\n"
    )
    add("| measure | median (min, max) |\n| --- | --- |")
    add(f"| `kubectl apply` to the first message handled in a pod | {spread(pods_result['first_message'])} |")
    add(f"| worker SIGKILLed to Ready again (same pod) | {spread(pods_result['restart_ready'])} |")
    add("")
    add(
        "The objects' own timestamps (kept in results.json under `stages`) have one-second resolution, "
        "too coarse to split a two-second path into its stages, so they are not tabled here. The "
        "first-message figure includes up to one poll interval of the operator.\n"
    )
