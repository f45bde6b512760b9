"""On the real node, what Kubernetes does for the workers: restart them, drain them, give them one core.

Every state read here was written by the kubelet or the kernel; messages are published by the test
and counted on nsqd, which forgets a message only when a worker finishes it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import Images
from tests.e2e.node.support import (
    CONSUMER_LABEL,
    Operator,
    PodWatch,
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

SLEEPER = ["nsq_worker.examples:SleepWorker"]


def sleepy(count: int, seconds: float) -> list[bytes]:
    return [json.dumps({"sleep": seconds, "n": n}).encode() for n in range(count)]


def test_a_killed_worker_is_restarted_by_the_kubelet_and_nothing_is_lost(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    real_node: RealNode, node_images: Images,
) -> None:  # fmt: skip
    nsqd = pod_nsq.nsqds[0]
    nsqd.create_topic("kill", "pods")
    worker = {"args": SLEEPER, "maxInFlight": 20, "concurrency": 20}
    apply(kube_cluster, worker_ns, consumer("victim", pod_nsq, "kill", worker=worker))
    [pod] = wait_ready_pods(kube_cluster, worker_ns, "victim", count=1)
    total = 600
    nsqd.publish("kill", sleepy(total, 0.05))
    kube_cluster.wait_for(
        lambda: nsqd.channel_stats("kill", "pods").get("in_flight_count", 0) > 0, timeout=30,
        what="messages in flight",
    )  # fmt: skip
    for pid in container_pids(real_node, pod):
        os.kill(pid, signal.SIGKILL)  # mid-stream: nsqd holds its in-flight messages

    def restarted() -> bool:
        [current] = pods(kube_cluster, worker_ns, "victim")
        status = container_status(current)
        return bool(status.get("restartCount", 0) >= 1 and status.get("ready"))

    kube_cluster.wait_for(restarted, timeout=60, what="the kubelet restarting the worker, Ready again")
    [again] = pods(kube_cluster, worker_ns, "victim")
    assert again["metadata"]["uid"] == pod["metadata"]["uid"]  # the same pod: a container restart
    last = container_status(again)["lastState"]["terminated"]
    assert last["exitCode"] == 137, last  # SIGKILL, as the kernel says
    assert last["reason"] == "Error", last
    everything = channel_empty(nsqd, "kill", "pods", total)
    kube_cluster.wait_for(everything, timeout=120, what="every message handled after the restart")


def test_a_worker_that_keeps_crashing_is_reported_from_its_pods_real_status(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images,
) -> None:  # fmt: skip
    pod_nsq.nsqds[0].create_topic("crash", "pods")
    worker = {"args": ["no_such_module:Worker"]}
    apply(kube_cluster, worker_ns, consumer("crashy", pod_nsq, "crash", worker=worker))

    seen: list[object] = []

    def reported() -> str | None:
        status = kube_cluster.get_json("nsqc", "crashy", "-n", worker_ns).get("status", {})
        seen[:] = [
            status.get("nsqds"),
            [container_status(p) for p in pods(kube_cluster, worker_ns, "crashy")],
        ]
        problems = [n.get("problem") or "" for n in status.get("nsqds", [])]
        return next((p for p in problems if ": CrashLoopBackOff; " in p), None)

    try:
        kube_cluster.wait_for(reported, timeout=120, what="CrashLoopBackOff in status.nsqds[].problem")
    except Exception as error:
        raise AssertionError(f"{error}; last seen {seen}") from error
    problem = reported()
    assert problem is not None
    assert "last exit code 2" in problem, problem
    assert "no_such_module" in problem, problem  # the worker's own last words
    [pod] = pods(kube_cluster, worker_ns, "crashy")
    assert container_status(pod)["state"]["waiting"]["reason"] == "CrashLoopBackOff"  # the kubelet's
    ready = next(c for c in kube_cluster.get_json("nsqc", "crashy", "-n", worker_ns)["status"]["conditions"]
                 if c["type"] == "Ready")  # fmt: skip
    assert ready["status"] == "False"
    assert ready["reason"] == "WorkersFailing"

    # Restarts go on; the warning does not repeat with each (events are for changes).
    restarts = container_status(pod)["restartCount"]
    kube_cluster.wait_for(
        lambda: container_status(pods(kube_cluster, worker_ns, "crashy")[0])["restartCount"] > restarts,
        timeout=120,
        what="another restart of the crashing worker",
    )
    time.sleep(2)  # a reconcile after that restart
    failing = [
        e for e in kube_cluster.get_json("events", "-n", worker_ns)["items"]
        if e["reason"] == "WorkerFailing" and e["involvedObject"]["name"] == "crashy"
        and "CrashLoopBackOff" in e["message"]
    ]  # fmt: skip
    assert sum(int(e.get("count") or 1) for e in failing) == 1, [e["message"] for e in failing]


@pytest.mark.parametrize("how", ["nsqd-leaves", "paused", "deleted"])
def test_a_removed_worker_drains_its_in_flight_messages_and_exits_0(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images, tmp_path: Path, how: str,
) -> None:  # fmt: skip
    nsqd, lookupd = pod_nsq.nsqds[0], pod_nsq.lookupds[0]
    nsqd.create_topic("drain", "pods")
    worker = {"args": SLEEPER, "maxInFlight": 8, "concurrency": 8, "drainTimeoutSeconds": 20}
    apply(kube_cluster, worker_ns, consumer("drainer", pod_nsq, "drain", worker=worker))
    [pod] = wait_ready_pods(kube_cluster, worker_ns, "drainer", count=1)
    watch = PodWatch(kube_cluster, worker_ns, f"{CONSUMER_LABEL}=drainer", tmp_path / "watch.json")
    total = 40
    nsqd.publish("drain", sleepy(total, 3.0))  # 8 at a time, 3 s each: a removal finds 8 in flight
    kube_cluster.wait_for(
        lambda: nsqd.channel_stats("drain", "pods").get("in_flight_count", 0) == 8, timeout=30,
        what="8 messages in flight",
    )  # fmt: skip
    try:
        if how == "nsqd-leaves":
            # lookupd stops listing this nsqd for the topic; nsqd itself stays up to take the FINs.
            requests.post(
                f"{lookupd.http_url}/topic/tombstone",
                params={"topic": "drain", "node": f"{nsqd.host}:{nsqd.http_port}"}, timeout=5,
            ).raise_for_status()  # fmt: skip
        elif how == "paused":
            kube_cluster.kubectl("patch", "nsqc", "drainer", "-n", worker_ns, "--type=merge",
                                 "-p", '{"spec": {"paused": true}}')  # fmt: skip
        else:
            kube_cluster.kubectl("delete", "nsqc", "drainer", "-n", worker_ns, "--wait=false")
        name = pod["metadata"]["name"]
        kube_cluster.wait_for(
            lambda: name in watch.deleted(), timeout=90, what=f"{name} gone after its drain"
        )
        terminated = watch.terminations()[name]
    finally:
        watch.stop()
    assert terminated["exitCode"] == 0, terminated  # the kubelet saw the worker exit cleanly
    # and kept why, in the worker's own words (its termination message): no message body in it
    assert terminated.get("message", "").startswith("drained: "), terminated
    assert "sleep" not in terminated["message"], terminated
    stats = nsqd.channel_stats("drain", "pods")
    assert stats["in_flight_count"] == 0, stats
    assert stats["requeue_count"] == 0, stats  # none was handed back for a redelivery
    assert stats["timeout_count"] == 0, stats
    handled = total - stats["depth"]
    assert handled >= 8, stats  # the 8 in flight at the removal were finished, not dropped
    assert stats["depth"] + handled == total  # and the rest wait on nsqd: nothing lost


def test_a_default_worker_gets_exactly_one_core_and_runs_locked_down(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    real_node: RealNode, node_images: Images,
) -> None:  # fmt: skip
    pod_nsq.nsqds[0].create_topic("core", "pods")
    body = consumer("cored", pod_nsq, "core")
    del body["spec"]["worker"]["resources"]  # the default: requests = limits = 1 CPU
    apply(kube_cluster, worker_ns, body)
    [pod] = wait_ready_pods(kube_cluster, worker_ns, "cored", count=1, timeout=180)
    assert pod["status"]["qosClass"] == "Guaranteed"
    container_id = container_status(pod)["containerID"].split("://", 1)[1]
    cpu = real_node.container_cgroup(container_id, "cpu")
    quota = int((cpu / "cpu.cfs_quota_us").read_text())
    period = int((cpu / "cpu.cfs_period_us").read_text())
    assert quota == period == 100000, (quota, period)  # one CPU, enforced by the kernel
    pid = container_pids(real_node, pod)[0]
    uids = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
    )
    assert uids.split()[1:] == ["10001"] * 4, uids  # real, effective, saved, fs: non-root
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    root = next(line for line in mounts if line.split()[4] == "/")
    assert "ro" in root.split()[5].split(","), root  # read-only root filesystem
    assert not any("/var/run/secrets/kubernetes.io" in line for line in mounts)  # no token mounted
    caps = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("CapEff:")
    )
    assert int(caps.split()[1], 16) == 0, caps  # no capabilities
