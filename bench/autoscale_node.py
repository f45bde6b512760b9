"""7b. The autoscaler on the real node: one hot nsqd among three, against fixed replica counts.

The whole path, real: the operator as a pod installed by helm, three nsqd on the bridge, worker
pods under the rig's kubelet. A backlog is published to one nsqd while the two others get a
trickle; each policy runs the same workload in turn, and the run measures how long the backlog
takes to drain (until nsqd holds nothing of it) and the pod-seconds the Deployments asked for
(their spec.replicas, sampled, summed over time: the CPU reserved). The handler sleeps a few
milliseconds per message (cooperatively), so a pod's rate is set by its concurrency, not by the
machine's two shared cores: pods add capacity here the way they would on a real cluster.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import node_rig
from bench.common import Config
from tests.e2e.node.support import apply, consumer
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster, Nsqd

TINY = {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"cpu": "100m", "memory": "96Mi"}}
SLEEP = 0.02  # seconds per message: with concurrency 4 a pod handles at most ~200 msg/s
CONCURRENCY = 4
TRICKLE = 5  # msg/s on each cold nsqd
POLL = 2  # seconds between the operator's polls


@dataclass(frozen=True)
class Policy:
    name: str
    spec: dict[str, Any]  # merged into the NsqConsumer's spec


def policies(max_replicas: int, window: int) -> list[Policy]:
    autoscaling = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": max_replicas,
        "targetBacklogPerReplica": 500,
        "scaleDownStabilizationSeconds": window,
        "maxScaleUpStep": max_replicas,
    }
    return [
        Policy("per-nsqd autoscaler", {"autoscaling": autoscaling}),
        Policy("fixed 1 per nsqd", {}),
        Policy(f"fixed {max_replicas} per nsqd", {"worker": {"replicasPerNsqd": max_replicas}}),
    ]


class _Sampler(threading.Thread):
    """Sums spec.replicas of a consumer's Deployments over time (pod-seconds reserved)."""

    def __init__(self, kube: KubeCluster, namespace: str) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace = kube, namespace
        self.pod_seconds = 0.0
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self._halt.wait(0.5):
            try:
                items = self.kube.get_json("deployments", "-n", self.namespace)["items"]
            except Exception:  # a busy API server: the next sample counts the gap
                continue
            total = sum(int(d["spec"].get("replicas", 0)) for d in items)
            now = time.monotonic()
            self.pod_seconds += total * (now - last)
            self.peak = max(self.peak, total)
            last = now

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def _drained(nsqd: Nsqd, topic: str, channel: str, at_least: int) -> bool:
    stats = nsqd.channel_stats(topic, channel)
    return (
        stats.get("message_count", 0) >= at_least
        and stats.get("depth", 1) == 0
        and stats.get("in_flight_count", 1) == 0
    )


def _run(
    kube: KubeCluster, nsq: NsqCluster, policy: Policy, index: int, backlog: int, horizon: float
) -> dict[str, Any]:
    """One policy: the time to drain the backlog, and the pod-seconds over `horizon` seconds from
    the publish (or until drained, if later), the same span for every policy."""
    namespace = f"bench-as-{index}-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    topic, channel = f"skew{index}", "work"
    for nsqd in nsq.nsqds:
        nsqd.create_topic(topic, channel)
    hot, cold = nsq.nsqds[0], nsq.nsqds[1:]
    worker: dict[str, Any] = {
        "resources": TINY,
        "args": ["nsq_worker.examples:SleepWorker"],
        "concurrency": CONCURRENCY,
        "maxInFlight": CONCURRENCY,
        **policy.spec.get("worker", {}),
    }
    body = consumer("skew", nsq, topic, channel=channel, worker=worker)
    body["spec"]["lookupd"]["pollIntervalSeconds"] = POLL
    body["spec"].update({k: v for k, v in policy.spec.items() if k != "worker"})
    task = json.dumps({"sleep": SLEEP}).encode()
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for nsqd in cold:
                nsqd.publish(topic, [task] * TRICKLE)

    sampler = _Sampler(kube, namespace)
    feeder = threading.Thread(target=trickle, daemon=True)
    try:
        apply(kube, namespace, body)
        deadline = time.monotonic() + 180
        while len(kube.get_json("deployments", "-n", namespace)["items"]) < len(nsq.nsqds):
            if time.monotonic() > deadline:
                raise TimeoutError("no Deployment for every nsqd")
            time.sleep(0.5)
        sampler.start()
        feeder.start()
        started = time.monotonic()
        hot.publish(topic, [task] * backlog)
        while not _drained(hot, topic, channel, backlog):
            if time.monotonic() - started > 900:
                raise TimeoutError("the backlog did not drain within 15 minutes")
            time.sleep(0.5)
        drain = time.monotonic() - started
        time.sleep(max(0.0, started + horizon - time.monotonic()))  # the tail: scale-down costs too
    finally:
        stop.set()
        sampler.stop()
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return {"policy": policy.name, "drain_seconds": drain, "pod_seconds": sampler.pod_seconds,
            "peak_replicas": sampler.peak, "horizon_seconds": max(horizon, drain)}  # fmt: skip


def measure(config: Config, log: Callable[[str], None]) -> dict[str, Any]:
    """The control plane with the real node, the operator pod, three nsqd; one run per policy."""
    backlog = 2_000 if config.quick else 20_000
    max_replicas, window = (2, 5) if config.quick else (4, 20)
    horizon = 30.0 if config.quick else 180.0
    runs = []
    with node_rig.real_node(config.work / "autoscale-node", 3, log) as (kube, _node, nsq):
        for index, policy in enumerate(policies(max_replicas, window)):
            run = _run(kube, nsq, policy, index, backlog, horizon)
            log(f"{policy.name}: drained in {run['drain_seconds']:.1f} s, "
                f"{run['pod_seconds']:.0f} pod-seconds, peak {run['peak_replicas']} pods")  # fmt: skip
            runs.append(run)
    return {
        "note": (
            f"Real pods on the rig's kubelet, the operator as a pod: {backlog:,} messages published at "
            f"once to one nsqd of three (the two others get {TRICKLE} msg/s each); a worker pod handles "
            f"at most about {CONCURRENCY / SLEEP:.0f} msg/s (it sleeps {SLEEP * 1000:.0f} ms per message, "
            f"{CONCURRENCY} at once); polls every {POLL} s; autoscaler target 500 per replica, max "
            f"{max_replicas}, window {window} s. Pod-seconds are the Deployments' spec.replicas summed "
            f"over {horizon:.0f} s from the publish (longer if the drain took longer), so the autoscaler "
            "pays for its scale-down window. KEDA is not installed on the rig, so the KEDA-style policy "
            "is only simulated above."
        ),
        "measured": time.strftime("%Y-%m-%d"),
        "command": "python -m bench --only autoscale_node",
        "policies": {
            run["policy"]: {
                "pod_seconds": run["pod_seconds"],
                "drain_seconds": run["drain_seconds"],
                "peak_pods": run["peak_replicas"],
            }
            for run in runs
        },
        "backlog": backlog,
        "horizon_seconds": horizon,
    }
