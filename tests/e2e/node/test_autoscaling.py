"""On the real node, the operator's per-nsqd autoscaler: each nsqd's Deployment follows that nsqd's own
backlog, scale-downs wait out the stabilization window and drain, zero wakes up, and missing numbers
hold replicas.

Messages are published by the tests and counted on nsqd, which forgets a message only when a worker
finishes it; replicas are read from the Deployments the API server holds, pods and exit codes from
what the kubelet reported, and decisions from the NsqConsumer's status and events.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Images
from tests.e2e.node.support import (
    CONSUMER_LABEL,
    Operator,
    PodWatch,
    apply,
    channel_empty,
    consumer,
    pods,
    ready,
    wait_ready_pods,
)
from tests.rig import hostnet
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster, Nsqd

SLEEPER = ["nsq_worker.examples:SleepWorker"]
NSQD_LABEL = "nsqoperator.dev/nsqd"
ADDRESS_ANNOTATION = "nsqoperator.dev/nsqd-address"
# 10 messages at a time per worker: a worker's rate is set by the handler's sleep, not by its CPU.
WORKER = {"args": SLEEPER, "maxInFlight": 10, "concurrency": 10, "drainTimeoutSeconds": 10}
SCALED = re.compile(r"^Scaled Deployment (\S+) for nsqd (\S+) to (\d+) replica\(s\)")


def sleepy(start: int, count: int, seconds: float) -> list[bytes]:
    return [json.dumps({"sleep": seconds, "n": n}).encode() for n in range(start, start + count)]


def autoscaled(name: str, nsq: NsqCluster, topic: str, **settings: Any) -> dict[str, Any]:
    body = consumer(name, nsq, topic, worker=WORKER)
    body["spec"]["autoscaling"] = {"enabled": True, **settings}
    return body


def deployments(kube: KubeCluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """The consumer's worker Deployments, by the nsqd address each serves."""
    items = kube.get_json("deployments", "-n", namespace, "-l", f"{CONSUMER_LABEL}={name}")["items"]
    return {d["metadata"]["annotations"][ADDRESS_ANNOTATION]: d for d in items}


def replicas(kube: KubeCluster, namespace: str, name: str) -> dict[str, int]:
    """spec.replicas of each nsqd's Deployment: what the operator asked for."""
    return {a: int(d["spec"].get("replicas", 1)) for a, d in deployments(kube, namespace, name).items()}


def nsqd_pods(kube: KubeCluster, namespace: str, name: str, address: str) -> list[dict[str, Any]]:
    """The live pods of the Deployment for one nsqd."""
    label = deployments(kube, namespace, name)[address]["spec"]["selector"]["matchLabels"][NSQD_LABEL]
    return [p for p in pods(kube, namespace, name) if p["metadata"]["labels"].get(NSQD_LABEL) == label]


def ready_pods(kube: KubeCluster, namespace: str, name: str, address: str) -> int:
    return sum(1 for p in nsqd_pods(kube, namespace, name, address) if ready(p))


def status(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(kube.get_json("nsqc", name, "-n", namespace).get("status") or {})


def entry(kube: KubeCluster, namespace: str, name: str, address: str) -> dict[str, Any]:
    """status.nsqds[] for one nsqd ({} while there is none)."""
    found = status(kube, namespace, name).get("nsqds") or []
    return next((e for e in found if e.get("address") == address), {})


def condition(kube: KubeCluster, namespace: str, name: str, type_: str) -> dict[str, Any]:
    found = status(kube, namespace, name).get("conditions") or []
    return next((c for c in found if c.get("type") == type_), {})


def events(kube: KubeCluster, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    """The consumer's events with one reason, oldest first."""
    items = kube.get_json("events", "-n", namespace)["items"]
    found = [e for e in items if e["reason"] == reason and e["involvedObject"]["name"] == name]
    return sorted(found, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["creationTimestamp"]))


def scalings(kube: KubeCluster, namespace: str, name: str) -> list[tuple[str, int, str]]:
    """(nsqd, replicas, message) of every DeploymentScaled event, oldest first."""
    found = []
    for event in events(kube, namespace, name, "DeploymentScaled"):
        match = SCALED.match(event["message"])
        assert match is not None, event["message"]
        found.append((match.group(2), int(match.group(3)), event["message"]))
    return found


def backlog(nsqd: Nsqd, topic: str, channel: str = "pods") -> int:
    """depth + in flight of the channel, as nsqd tells the test (over loopback)."""
    stats = nsqd.channel_stats(topic, channel)
    return stats.get("depth", 0) + stats.get("in_flight_count", 0)


@dataclass
class Sample:
    at: float
    replicas: dict[str, int]
    backlog: int


@dataclass
class Sampler:
    """spec.replicas of every Deployment of a consumer and one nsqd's backlog, each time it is asked:
    the history a test asserts on (called from inside the waits, so the sampling never stops)."""

    kube: KubeCluster
    namespace: str
    name: str
    nsqd: Nsqd
    topic: str
    samples: list[Sample] = field(default_factory=list)

    def sample(self) -> Sample:
        taken = Sample(
            time.monotonic(), replicas(self.kube, self.namespace, self.name), backlog(self.nsqd, self.topic)
        )
        self.samples.append(taken)
        return taken

    def until(self, want: dict[str, int]) -> bool:
        return self.sample().replicas == want

    def of(self, address: str, since: float = 0.0) -> list[int]:
        return [s.replicas[address] for s in self.samples if s.at >= since and address in s.replicas]

    def observe(self, seconds: float) -> None:
        """Keep sampling for `seconds` (a hold: nothing is awaited, everything is recorded)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sample()
            time.sleep(0.3)


def never_down(history: list[int]) -> bool:
    return all(later >= earlier for earlier, later in itertools.pairwise(history))


@contextlib.contextmanager
def blocked_from_pods(port: int) -> Iterator[None]:
    """Refuse TCP connections from the pod network to one port on the gateway (the operator pod's
    way to an nsqd's HTTP); the test's own reads go over loopback and still work."""
    rule = ["INPUT", "-i", hostnet.BRIDGE, "-d", hostnet.GATEWAY, "-p", "tcp", "--dport", str(port),
            "-j", "REJECT", "--reject-with", "tcp-reset"]  # fmt: skip
    subprocess.run(["iptables", "-I", rule[0], "1", *rule[1:]], check=True, capture_output=True, timeout=30)
    try:
        yield
    finally:
        while subprocess.run(["iptables", "-D", *rule], capture_output=True, timeout=30).returncode == 0:
            pass


@pytest.mark.parametrize("pod_nsq", [{"nsqd": 3}], indirect=True)
def test_only_the_nsqd_with_a_backlog_scales_up_then_down_after_the_window_draining(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images, tmp_path: Path,
) -> None:  # fmt: skip
    window = 15
    topic = "hot"
    for nsqd in pod_nsq.nsqds:
        nsqd.create_topic(topic, "pods")
    hot, *idle = pod_nsq.nsqds
    settings = {"minReplicas": 1, "maxReplicas": 3, "targetBacklogPerReplica": 1000}
    body = autoscaled("orders", pod_nsq, topic, **settings, scaleDownStabilizationSeconds=window)
    apply(kube_cluster, worker_ns, body)
    wait_ready_pods(kube_cluster, worker_ns, "orders", count=3)
    watch = PodWatch(kube_cluster, worker_ns, f"{CONSUMER_LABEL}=orders", tmp_path / "watch.json")
    sampler = Sampler(kube_cluster, worker_ns, "orders", hot, topic)
    try:
        total = 20_000  # 200 a second per worker (10 at a time, 50 ms each): a backlog for a while
        hot.publish(topic, sleepy(0, total, 0.05))
        for index, nsqd in enumerate(idle):
            nsqd.publish(topic, sleepy(total + 100 * index, 100, 0.05))  # a trickle: no scaling for it
        everyone = {hot.tcp_address: 3, **{n.tcp_address: 1 for n in idle}}
        kube_cluster.wait_for(
            lambda: sampler.until(everyone), timeout=30, what=f"replicas {everyone}: only the hot nsqd up"
        )
        kube_cluster.wait_for(
            lambda: sampler.sample() and ready_pods(kube_cluster, worker_ns, "orders", hot.tcp_address) == 3,
            timeout=60, what="3 Ready workers for the hot nsqd",
        )  # fmt: skip
        assert sampler.samples[-1].backlog > 2000, "the backlog must outlast the scale-up to mean anything"

        def reported() -> bool:
            found = entry(kube_cluster, worker_ns, "orders", hot.tcp_address)
            return found.get("replicas") == 3 and found.get("desiredReplicas") == 3

        kube_cluster.wait_for(reported, timeout=30, what="status.nsqds[] of the hot nsqd at 3 of 3")
        hot_entry = entry(kube_cluster, worker_ns, "orders", hot.tcp_address)
        assert "capped at 3 (max)" in hot_entry["scaleReason"], hot_entry
        assert "up from" in hot_entry["scaleReason"], hot_entry
        for nsqd in idle:
            quiet = entry(kube_cluster, worker_ns, "orders", nsqd.tcp_address)
            assert quiet["replicas"] == quiet["desiredReplicas"] == 1, quiet
        active = condition(kube_cluster, worker_ns, "orders", "ScalingActive")
        assert (active.get("status"), active.get("reason")) == ("True", "BacklogPerNsqd"), active

        drained = channel_empty(hot, topic, "pods", total)
        kube_cluster.wait_for(
            lambda: sampler.sample() and drained(), timeout=150, what="the hot nsqd's backlog drained"
        )
        last_high = max(s.at for s in sampler.samples if s.backlog > 2000)  # 3 replicas' worth
        kube_cluster.wait_for(
            lambda: sampler.sample().replicas[hot.tcp_address] == 1, timeout=window + 30,
            what="the hot nsqd's Deployment back at 1 after the window",
        )  # fmt: skip
        lower = [s.at for s in sampler.samples if s.at > last_high and s.replicas[hot.tcp_address] < 3]
        first_down = min(lower)
        assert first_down - last_high >= window - 2, (
            f"scaled down {first_down - last_high:.1f} s after the backlog last wanted 3; window {window} s"
        )
        wait_ready_pods(kube_cluster, worker_ns, "orders", count=3)
        label = deployments(kube_cluster, worker_ns, "orders")[hot.tcp_address]["spec"]["selector"]
        hot_label = label["matchLabels"][NSQD_LABEL]
        seen = {
            e["object"]["metadata"]["name"]
            for e in watch.events()
            if e["object"]["metadata"]["labels"].get(NSQD_LABEL) == hot_label
        }
        left = nsqd_pods(kube_cluster, worker_ns, "orders", hot.tcp_address)
        staying = {p["metadata"]["name"] for p in left}
        removed = seen - staying
        assert len(removed) == 2, (seen, staying)
        kube_cluster.wait_for(
            lambda: removed <= watch.deleted(), timeout=60, what=f"the removed pods {sorted(removed)} gone"
        )
        terminations = watch.terminations()
    finally:
        watch.stop()
    for name in removed:
        ended = terminations[name]  # as the kubelet reported it
        assert ended["exitCode"] == 0, (name, ended)
        assert ended.get("message", "").startswith("drained: "), (name, ended)

    for nsqd in idle:
        assert set(sampler.of(nsqd.tcp_address)) == {1}, "an idle nsqd's Deployment never moved"
        kube_cluster.wait_for(
            channel_empty(nsqd, topic, "pods", 100), timeout=30, what=f"{nsqd.name}'s trickle handled"
        )
    stats = hot.channel_stats(topic, "pods")
    assert stats["depth"] == stats["in_flight_count"] == stats["deferred_count"] == 0, stats
    assert stats["message_count"] == total, stats  # every message delivered and finished: 0 lost
    assert stats["timeout_count"] == 0, stats

    scaled = scalings(kube_cluster, worker_ns, "orders")
    assert {address for address, _, _ in scaled} == {hot.tcp_address}, scaled  # the idle never scaled
    counts = [count for _, count, _ in scaled]
    peak = counts.index(3)
    ups, downs = counts[: peak + 1], counts[peak:]
    assert ups == sorted(set(ups)), counts  # one event per change: up without a step back
    assert downs == sorted(set(downs), reverse=True), counts  # and down without a step up
    assert downs[-1] == 1, counts
    assert all("backlog" in message for _, _, message in scaled), scaled  # each says why
    assert all("down from" in message for _, _, message in scaled[peak + 1 :]), scaled
    assert all(f"after {window} s" in message for _, _, message in scaled[peak + 1 :]), scaled


@pytest.mark.parametrize("pod_nsq", [{"nsqd": 2}], indirect=True)
def test_min_zero_idles_at_no_pods_and_a_backlog_wakes_it_without_losing_a_message(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images, tmp_path: Path,
) -> None:  # fmt: skip
    window = 15
    topic = "wake"
    hot, idle = pod_nsq.nsqds
    for nsqd in pod_nsq.nsqds:
        nsqd.create_topic(topic)  # only the topic: the channel is the operator's to make
    early = 200  # published before anyone consumes: nsqd keeps them in the topic until a channel exists
    hot.publish(topic, sleepy(0, early, 0.01))
    assert hot.channel_stats(topic, "pods") == {}
    assert idle.channel_stats(topic, "pods") == {}
    watch = PodWatch(kube_cluster, worker_ns, f"{CONSUMER_LABEL}=sleepy", tmp_path / "watch.json")
    sampler = Sampler(kube_cluster, worker_ns, "sleepy", hot, topic)
    try:
        settings = {"minReplicas": 0, "maxReplicas": 2, "targetBacklogPerReplica": 1000}
        body = autoscaled("sleepy", pod_nsq, topic, **settings, scaleDownStabilizationSeconds=window)
        apply(kube_cluster, worker_ns, body)
        kube_cluster.wait_for(
            lambda: hot.channel_stats(topic, "pods") and idle.channel_stats(topic, "pods"), timeout=30,
            what="the operator creating the channel on both nsqd",
        )  # fmt: skip
        kube_cluster.wait_for(
            lambda: sampler.until({hot.tcp_address: 1, idle.tcp_address: 0}), timeout=30,
            what="a worker for the nsqd with messages, none for the idle one",
        )  # fmt: skip
        kube_cluster.wait_for(
            channel_empty(hot, topic, "pods", early), timeout=60, what="the early messages handled"
        )
        kube_cluster.wait_for(
            lambda: sampler.until({hot.tcp_address: 0, idle.tcp_address: 0}), timeout=window + 30,
            what="both nsqd at zero after the window",
        )  # fmt: skip
        kube_cluster.wait_for(
            lambda: pods(kube_cluster, worker_ns, "sleepy") == [], timeout=60, what="no worker pod left"
        )
        for nsqd in pod_nsq.nsqds:  # while at zero, the channel waits on each nsqd
            stats = nsqd.channel_stats(topic, "pods")
            assert stats, nsqd.name
            assert stats["depth"] == 0, (nsqd.name, stats)

        def zero_reported() -> bool:
            found = [entry(kube_cluster, worker_ns, "sleepy", n.tcp_address) for n in pod_nsq.nsqds]
            return all(e.get("replicas") == 0 and e.get("desiredReplicas") == 0 for e in found)

        kube_cluster.wait_for(zero_reported, timeout=30, what="status.nsqds[] at 0 of 0 for both nsqd")

        late = 300
        hot.publish(topic, sleepy(early, late, 0.01))
        kube_cluster.wait_for(
            lambda: hot.channel_stats(topic, "pods")["depth"] == late
            and not pods(kube_cluster, worker_ns, "sleepy"),
            timeout=5, what="the late messages waiting on nsqd while no worker runs",
        )  # fmt: skip
        kube_cluster.wait_for(
            lambda: sampler.until({hot.tcp_address: 1, idle.tcp_address: 0}), timeout=30,
            what="the backlog waking one worker for its nsqd",
        )  # fmt: skip
        kube_cluster.wait_for(
            channel_empty(hot, topic, "pods", early + late), timeout=90, what="the late messages handled"
        )
        idle_label = deployments(kube_cluster, worker_ns, "sleepy")[idle.tcp_address]["spec"]["selector"]
        terminations = watch.terminations()
        seen = watch.events()
    finally:
        watch.stop()
    label = idle_label["matchLabels"][NSQD_LABEL]
    assert not [e for e in seen if e["object"]["metadata"]["labels"].get(NSQD_LABEL) == label], (
        "the idle nsqd never had a pod"
    )
    assert terminations, "the first worker was seen ending"
    for name, ended in terminations.items():
        assert ended["exitCode"] == 0, (name, ended)
        assert ended.get("message", "").startswith("drained: "), (name, ended)
    stats = hot.channel_stats(topic, "pods")
    assert stats["message_count"] == early + late, stats  # all of them reached the channel, and were
    assert stats["depth"] == stats["in_flight_count"] == 0, stats  # finished: nothing lost at zero
    assert idle.channel_stats(topic, "pods")["message_count"] == 0
    scaled = [(a, n) for a, n, _ in scalings(kube_cluster, worker_ns, "sleepy")]
    assert scaled == [(hot.tcp_address, 0), (hot.tcp_address, 1)], scaled


@pytest.mark.parametrize("pod_nsq", [{"nsqd": 2}], indirect=True)
def test_an_nsqd_whose_stats_cannot_be_read_keeps_its_replicas_and_says_so(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images, tmp_path: Path,
) -> None:  # fmt: skip
    window = 15
    topic = "blind"
    blind, other = pod_nsq.nsqds
    for nsqd in pod_nsq.nsqds:
        nsqd.create_topic(topic, "pods")
    settings = {"minReplicas": 1, "maxReplicas": 2, "targetBacklogPerReplica": 1000}
    body = autoscaled("blinded", pod_nsq, topic, **settings, scaleDownStabilizationSeconds=window)
    apply(kube_cluster, worker_ns, body)
    wait_ready_pods(kube_cluster, worker_ns, "blinded", count=2)
    sampler = Sampler(kube_cluster, worker_ns, "blinded", blind, topic)
    count = 3000  # 2 replicas' worth (capped at max), ~8 s for two workers
    blind.publish(topic, sleepy(0, count, 0.05))
    kube_cluster.wait_for(
        lambda: sampler.until({blind.tcp_address: 2, other.tcp_address: 1}), timeout=30,
        what="the nsqd with a backlog at 2 replicas",
    )  # fmt: skip
    kube_cluster.wait_for(
        lambda: ready_pods(kube_cluster, worker_ns, "blinded", blind.tcp_address) == 2, timeout=60,
        what="its 2 workers Ready",
    )  # fmt: skip
    held = {p["metadata"]["name"] for p in nsqd_pods(kube_cluster, worker_ns, "blinded", blind.tcp_address)}
    label = deployments(kube_cluster, worker_ns, "blinded")[blind.tcp_address]["spec"]["selector"]
    selector = f"{CONSUMER_LABEL}=blinded,{NSQD_LABEL}={label['matchLabels'][NSQD_LABEL]}"
    watch = PodWatch(kube_cluster, worker_ns, selector, tmp_path / "watch.json")  # the held nsqd's pods
    try:
        with blocked_from_pods(blind.http_port):
            blocked = time.monotonic()

            def says_so() -> bool:
                found = condition(kube_cluster, worker_ns, "blinded", "ScalingActive")
                return (
                    found.get("status") == "False"
                    and found.get("reason") == "StatsUnreadable"
                    and blind.tcp_address in found.get("message", "")
                )

            kube_cluster.wait_for(says_so, timeout=30, what="ScalingActive False, StatsUnreadable, naming it")
            active = condition(kube_cluster, worker_ns, "blinded", "ScalingActive")
            assert other.tcp_address not in active["message"], active  # only the one that cannot be read
            kube_cluster.wait_for(
                lambda: any(blind.tcp_address in e["message"]
                            for e in events(kube_cluster, worker_ns, "blinded", "NsqdStatsUnreadable")),
                timeout=30, what="an NsqdStatsUnreadable event naming the nsqd",
            )  # fmt: skip
            [warning] = events(kube_cluster, worker_ns, "blinded", "NsqdStatsUnreadable")
            assert warning["type"] == "Warning", warning
            found = entry(kube_cluster, worker_ns, "blinded", blind.tcp_address)
            assert found["scaleReason"].startswith("held at 2"), found
            assert found["desiredReplicas"] == 2, found

            # The other nsqd is still scaled on its own numbers meanwhile.
            other.publish(topic, sleepy(count, count, 0.05))
            kube_cluster.wait_for(
                lambda: sampler.until({blind.tcp_address: 2, other.tcp_address: 2}), timeout=30,
                what="the readable nsqd scaled up while the other is held",
            )  # fmt: skip
            kube_cluster.wait_for(
                lambda: sampler.sample() and channel_empty(blind, topic, "pods", count)(), timeout=90,
                what="the held nsqd's backlog drained (by its 2 workers)",
            )  # fmt: skip
            # Readable, this would go down to 1 one window after the backlog went: it does not.
            sampler.observe(window + 5)
            assert set(sampler.of(blind.tcp_address, since=blocked)) == {2}, sampler.of(blind.tcp_address)
            assert watch.deleted() == set(), watch.deleted()  # nothing deleted on missing numbers
            still = nsqd_pods(kube_cluster, worker_ns, "blinded", blind.tcp_address)
            assert {p["metadata"]["name"] for p in still} == held
            assert all(ready(p) for p in still)
            found = entry(kube_cluster, worker_ns, "blinded", blind.tcp_address)
            assert "depth" not in found, found  # no numbers, none made up
            assert found["desiredReplicas"] == 2, found
    finally:
        watch.stop()

    def resumed() -> bool:
        found = condition(kube_cluster, worker_ns, "blinded", "ScalingActive")
        return found.get("status") == "True" and found.get("reason") == "BacklogPerNsqd"

    kube_cluster.wait_for(resumed, timeout=30, what="ScalingActive True again after the unblock")
    kube_cluster.wait_for(
        lambda: any(blind.tcp_address in e["message"]
                    for e in events(kube_cluster, worker_ns, "blinded", "NsqdStatsReadable")),
        timeout=30, what="an NsqdStatsReadable event naming the nsqd",
    )  # fmt: skip
    kube_cluster.wait_for(
        lambda: sampler.sample().replicas[blind.tcp_address] == 1, timeout=window + 30,
        what="the nsqd's replicas following its (empty) backlog again",
    )  # fmt: skip
    kube_cluster.wait_for(
        channel_empty(other, topic, "pods", count), timeout=90, what="the other nsqd's backlog drained"
    )
    kube_cluster.wait_for(
        lambda: sampler.until({blind.tcp_address: 1, other.tcp_address: 1}), timeout=window + 30,
        what="both nsqd back at 1",
    )  # fmt: skip


@pytest.mark.parametrize("pod_nsq", [{"nsqd": 1}], indirect=True)
def test_bursts_shorter_than_the_window_do_not_flap_replicas(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images,
) -> None:  # fmt: skip
    window = 25
    topic = "bursty"
    [nsqd] = pod_nsq.nsqds
    nsqd.create_topic(topic, "pods")
    settings = {"minReplicas": 1, "maxReplicas": 2, "targetBacklogPerReplica": 500}
    body = autoscaled("bursty", pod_nsq, topic, **settings, scaleDownStabilizationSeconds=window)
    apply(kube_cluster, worker_ns, body)
    wait_ready_pods(kube_cluster, worker_ns, "bursty", count=1)
    sampler = Sampler(kube_cluster, worker_ns, "bursty", nsqd, topic)
    address = nsqd.tcp_address
    burst, every, bursts = 1200, 5.0, 8  # each ~1-2 s of work for two workers, then nothing for the rest
    published = 0
    started = time.monotonic()
    for number in range(bursts):
        nsqd.publish(topic, sleepy(published, burst, 0.02))
        published += burst
        sampler.observe(started + (number + 1) * every - time.monotonic())
    last_burst = started + (bursts - 1) * every
    history = sampler.of(address)
    assert 2 in history, history
    up = next(s.at for s in sampler.samples if s.replicas[address] == 2)
    assert never_down(history), history  # no scale-down while the bursts go on
    quiet = [s for s in sampler.samples if s.at > up and s.backlog == 0]
    gaps = {int((s.at - started) // every) for s in quiet}
    assert len(gaps) >= 3, f"the load must really come and go: backlog 0 seen between bursts {gaps}"
    kube_cluster.wait_for(
        lambda: sampler.sample().replicas[address] == 1, timeout=window + 30,
        what="one replica again, a window after the bursts stopped",
    )  # fmt: skip
    down = min(s.at for s in sampler.samples if s.at > up and s.replicas[address] == 1)
    # The window runs from the last poll that saw a backlog worth 2: the last burst, or (drained
    # between two polls) the one before it.
    assert down - last_burst >= window - every - 2, f"down {down - last_burst:.1f} s after the last burst"
    kube_cluster.wait_for(
        channel_empty(nsqd, topic, "pods", published), timeout=60, what="every burst handled"
    )
    assert [n for _, n, _ in scalings(kube_cluster, worker_ns, "bursty")] == [2, 1]  # one up, one down
