"""On the real node: a new pod template rolls out one worker Deployment at a time, each waiting for its
new pod to pass the kubelet's readiness probe, also across an operator that is killed mid-rollout;
and a crashing worker's log lines (which may quote message data) never reach the NsqConsumer.

The operator runs as a pod, installed by the chart with `rollout.maxConcurrent=1` and without leader
election (one pod, so a killed operator is back within seconds, in the same pod).
"""

from __future__ import annotations

import calendar
import itertools
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Images
from tests.e2e.node.support import (
    OPERATOR_RELEASE,
    Operator,
    apply,
    consumer,
    container_pids,
    container_status,
    node_values,
    pods,
    ready,
    restricted_namespace,
    team_namespace,
    uninstall_operator,
    wait_ready_pods,
)
from tests.integration.rollouts import DeploymentWatch, mid_rollout, most_at_once
from tests.rig.helm import CHART, helm
from tests.rig.kube import KubeCluster
from tests.rig.node import RealNode
from tests.rig.nsq import NsqCluster
from tests.rig.reporting import LOG_PATHS, attach_logs

SLOW_WORKER = """
import time
from nsq_worker import NsqProcessWorker

class Slow(NsqProcessWorker):
    def setup(self):
        time.sleep({seconds})  # not ready meanwhile: /readyz says "starting"

    def handle_message(self, reader, message):
        pass

Slow.run(block=True)
"""


@pytest.fixture(scope="module")
def one_at_a_time(kube_cluster: KubeCluster, node_images: Images, real_node: RealNode) -> Iterator[Operator]:
    """The chart on the real node: one operator pod, at most one worker Deployment rolling at once."""
    namespace = restricted_namespace(kube_cluster, f"nsq-system-{uuid.uuid4().hex[:6]}")
    helm(
        "install", OPERATOR_RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout=180s",
        "--take-ownership", *node_values(node_images.worker), "--set", "rollout.maxConcurrent=1",
        "--set", "replicaCount=1", "--set", "leaderElection.enabled=false",
        kubeconfig=kube_cluster.kubeconfig,
    )  # fmt: skip
    operator = Operator(kube_cluster, namespace)
    try:
        yield operator
    finally:
        uninstall_operator(operator)


@pytest.fixture
def team_ns(
    kube_cluster: KubeCluster, one_at_a_time: Operator, request: pytest.FixtureRequest
) -> Iterator[str]:
    attach_logs(request, [kube_cluster.log_dir, Path("/var/lib/nsq-operator-rig/logs")])
    with team_namespace(kube_cluster) as name:
        yield name


def save_logs(operator: Operator, request: pytest.FixtureRequest) -> str:
    """The operator pod's log, kept beside the test's for the report of a failing test."""
    text = "".join(
        operator.kube.kubectl("logs", p["metadata"]["name"], "-n", operator.namespace, check=False).stdout
        for p in operator.pods()
    )
    log = operator.kube.log_dir / f"operator-pod-{operator.namespace}.log"
    log.write_text(text)
    request.node.stash[LOG_PATHS] = [*request.node.stash.get(LOG_PATHS, []), log]
    return text


def operator_pod(operator: Operator) -> dict[str, Any]:
    [pod] = operator.pods()
    return pod


def slow(seconds: int) -> dict[str, Any]:
    """A worker whose setup() takes `seconds`: its pod is Ready only after that (the kubelet's probe)."""
    return {"command": ["python", "-c", SLOW_WORKER.format(seconds=seconds)], "args": None}


def when(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def ready_at(pod: dict[str, Any]) -> float:
    [condition] = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
    return when(condition["lastTransitionTime"])


def rolled(kube: KubeCluster, namespace: str, name: str, mark: str, count: int) -> bool:
    items = kube.get_json("deployments", "-n", namespace, "-l", f"nsqoperator.dev/consumer={name}")["items"]
    return len(items) == count and all(
        mark in str(d["spec"]["template"]["spec"]["containers"][0].get("command")) and not mid_rollout(d)
        for d in items
    )


def condition(kube: KubeCluster, namespace: str, name: str, type_: str) -> dict[str, Any]:
    status = kube.get_json("nsqc", name, "-n", namespace).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def rollout_reasons(kube: KubeCluster, namespace: str, name: str) -> list[str]:
    selector = f"involvedObject.kind=NsqConsumer,involvedObject.name={name}"
    items = kube.get_json("events", "-n", namespace, "--field-selector", selector)["items"]
    return [e["reason"] for e in items if e["reason"].startswith("Rollout")]


@pytest.mark.parametrize("pod_nsq", [{"nsqd": 3}], indirect=True)
def test_each_deployment_waits_for_its_new_pod_to_be_ready_and_a_killed_operator_keeps_the_bound(
    kube_cluster: KubeCluster, one_at_a_time: Operator, team_ns: str, pod_nsq: NsqCluster,
    real_node: RealNode, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    for nsqd in pod_nsq.nsqds:
        nsqd.create_topic("roll", "pods")
    apply(kube_cluster, team_ns, consumer("roll", pod_nsq, "roll", worker=slow(1)))
    wait_ready_pods(kube_cluster, team_ns, "roll", count=3)
    kube_cluster.wait_for(lambda: rolled(kube_cluster, team_ns, "roll", "sleep(1)", 3), timeout=60,
                          what="three settled Deployments")  # fmt: skip

    # A new template whose pods are Ready 6 s after they start: one Deployment at a time.
    watch = DeploymentWatch(kube_cluster, team_ns, tmp_path / "first.jsonl")
    first = {p["metadata"]["name"] for p in pods(kube_cluster, team_ns, "roll")}
    apply(kube_cluster, team_ns, consumer("roll", pod_nsq, "roll", worker=slow(6)))
    try:
        kube_cluster.wait_for(lambda: rolled(kube_cluster, team_ns, "roll", "sleep(6)", 3), timeout=150,
                              what="all three Deployments rolled out")  # fmt: skip
    finally:
        watch.stop()
    assert most_at_once(watch) == 1
    new = sorted(
        (
            p
            for p in wait_ready_pods(kube_cluster, team_ns, "roll", count=3)
            if p["metadata"]["name"] not in first
        ),
        key=lambda p: when(p["metadata"]["creationTimestamp"]),
    )
    assert len(new) == 3
    for before, after in itertools.pairwise(new):
        # The next new pod was made only once the one before was Ready (whole seconds, as the API says).
        assert when(after["metadata"]["creationTimestamp"]) >= ready_at(before), (before, after)
        assert ready_at(before) - when(before["metadata"]["creationTimestamp"]) >= 5  # setup() took 6 s
    said = rollout_reasons(kube_cluster, team_ns, "roll")
    assert said.count("RolloutStarted") == 1, said
    assert "RolloutWaiting" in said
    kube_cluster.wait_for(
        lambda: condition(kube_cluster, team_ns, "roll", "RolloutProgressing").get("reason") == "UpToDate",
        timeout=30, what="RolloutProgressing=False UpToDate",
    )  # fmt: skip

    # Again, and the operator is SIGKILLed while the first Deployment rolls: the kubelet restarts it,
    # and it reads from the Deployments themselves which one is mid-rollout.
    watch = DeploymentWatch(kube_cluster, team_ns, tmp_path / "second.jsonl")
    apply(kube_cluster, team_ns, consumer("roll", pod_nsq, "roll", worker=slow(12)))

    def one_rolling() -> bool:
        items = kube_cluster.get_json("deployments", "-n", team_ns)["items"]
        return any("sleep(12)" in str(d["spec"]["template"]) and mid_rollout(d) for d in items)

    kube_cluster.wait_for(one_rolling, timeout=30, what="the first Deployment rolling")
    pod = operator_pod(one_at_a_time)
    restarts = container_status(pod).get("restartCount", 0)
    for pid in container_pids(real_node, pod):
        os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        status = container_status(operator_pod(one_at_a_time))
        return bool(status.get("restartCount", 0) > restarts and status.get("ready"))

    try:
        kube_cluster.wait_for(back, timeout=60, what="the operator restarted by the kubelet, ready")
        kube_cluster.wait_for(lambda: rolled(kube_cluster, team_ns, "roll", "sleep(12)", 3), timeout=180,
                              what="the interrupted rollout completed")  # fmt: skip
    finally:
        watch.stop()
        save_logs(one_at_a_time, request)
    assert most_at_once(watch) == 1
    kube_cluster.wait_for(
        lambda: condition(kube_cluster, team_ns, "roll", "RolloutProgressing").get("reason") == "UpToDate",
        timeout=30, what="RolloutProgressing=False UpToDate after the restart",
    )  # fmt: skip
    said = rollout_reasons(kube_cluster, team_ns, "roll")
    # The restarted operator read from the status that a rollout ran: one start, one end, each.
    assert said.count("RolloutStarted") == 2, said
    assert said.count("RolloutComplete") == 2, said


LEAKY_WORKER = """
import logging
from nsq_worker import NsqProcessWorker

log = logging.getLogger("leaky")

class Leaky(NsqProcessWorker):
    def setup(self):
        # Put together here, so the spec (which holds this code) does not hold the planted string.
        planted = "SECRET-" + "PLANTED-" + "{reversed_token}"[::-1]
        log.error("while connecting, got message {{'card': '%s'}}", planted)
        raise RuntimeError("the database refused the connection")

    def handle_message(self, reader, message):
        pass

Leaky.run(block=True)
"""


def test_a_crashing_workers_log_lines_never_reach_the_nsqconsumer(
    kube_cluster: KubeCluster, one_at_a_time: Operator, team_ns: str, pod_nsq: NsqCluster,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    token = uuid.uuid4().hex
    secret = f"SECRET-PLANTED-{token}"
    pod_nsq.nsqds[0].create_topic("leak", "pods")
    code = LEAKY_WORKER.format(reversed_token=token[::-1])
    assert secret not in code
    worker = {"command": ["python", "-c", code], "args": None}
    apply(kube_cluster, team_ns, consumer("leak", pod_nsq, "leak", worker=worker))
    why = "setup() failed: RuntimeError: the database refused the connection"

    def told() -> bool:
        ready_ = condition(kube_cluster, team_ns, "leak", "Ready")
        return ready_.get("reason") == "WorkersFailing" and why in str(ready_.get("message"))

    kube_cluster.wait_for(told, timeout=120, what=f"Ready=False WorkersFailing saying {why}")
    [pod] = pods(kube_cluster, team_ns, "leak")
    assert not ready(pod)
    container = pod["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "File"
    # The planted line is in the worker's log (the control: it was there to leak)...
    logs = kube_cluster.kubectl(
        "logs", pod["metadata"]["name"], "-n", team_ns, "--previous", check=False
    ).stdout
    logs += kube_cluster.kubectl("logs", pod["metadata"]["name"], "-n", team_ns, check=False).stdout
    assert secret in logs
    assert why in container_status(pod)["lastState"]["terminated"]["message"]

    # ...and nowhere a reader of the NsqConsumer, of events or of the operator's log looks.
    body = kube_cluster.kubectl("get", "nsqc", "leak", "-n", team_ns, "-o", "json").stdout
    entry = kube_cluster.get_json("nsqc", "leak", "-n", team_ns)["status"]["nsqds"][0]
    assert why in entry["problem"]
    events = kube_cluster.kubectl("get", "events", "-n", team_ns, "-o", "json").stdout
    failing = [
        e for e in kube_cluster.get_json("events", "-n", team_ns)["items"] if e["reason"] == "WorkerFailing"
    ]
    assert any(why in e["message"] for e in failing), [e["message"] for e in failing]
    operator_logs = save_logs(one_at_a_time, request)
    assert operator_logs.strip(), "the operator's log was read"
    for where, text in (
        ("the NsqConsumer", body),
        ("the events", events),
        ("the operator's log", operator_logs),
    ):
        assert secret not in text, f"the planted secret is in {where}"
