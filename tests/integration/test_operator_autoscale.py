"""The per-nsqd autoscaler's decisions, against real nsqd and the real API server.

kwok's pods consume nothing, so a backlog published here stays exactly as large as the test made it:
what each nsqd's Deployment gets follows from that nsqd's own /stats alone. (Draining, pods exiting
0 and waking from zero with real workers are in tests/e2e/node/test_autoscaling.py.)
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest
import requests

from tests.integration.operators import CHANNEL, TOPIC, Namespace, consumer, topic_everywhere
from tests.rig.nsq import NsqCluster, Nsqd

pytestmark = pytest.mark.kube

WINDOW = 10  # seconds of stabilization: short, so scale-downs happen within a test


def autoscaled(
    lookupd: list[str], name: str = "orders", channel: str = CHANNEL, **settings: Any
) -> dict[str, Any]:
    body = consumer(lookupd, name=name)
    body["spec"]["channel"] = channel
    body["spec"]["autoscaling"] = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetBacklogPerReplica": 100,
        "scaleDownStabilizationSeconds": WINDOW,
        **settings,
    }
    return body


def replicas(ns: Namespace, name: str = "orders") -> dict[str, int]:
    return {a: int(d["spec"].get("replicas", -1)) for a, d in ns.deployments(name).items()}


def backlog(nsqd: Nsqd, count: int) -> None:
    nsqd.publish(TOPIC, (json.dumps({"n": n}).encode() for n in range(count)))


def entry(ns: Namespace, address: str, name: str = "orders") -> dict[str, Any]:
    return next((n for n in ns.status(name).get("nsqds", []) if n["address"] == address), {})


def test_each_nsqd_gets_replicas_for_its_own_backlog_and_scale_down_waits_for_the_window(
    ns: Namespace, nsq_cluster: NsqCluster
) -> None:
    third = nsq_cluster.add_nsqd()
    addresses = topic_everywhere(nsq_cluster)
    for nsqd in nsq_cluster.nsqds:
        nsqd.create_topic(TOPIC, CHANNEL)
    hot, warm = nsq_cluster.nsqds[0], third
    backlog(hot, 1000)  # 10 replicas' worth: capped at max 4
    backlog(warm, 250)  # 3 replicas' worth
    ns.apply(autoscaled(nsq_cluster.lookupd_http_urls))
    want = {hot.tcp_address: 4, warm.tcp_address: 3}
    expected = {a: want.get(a, 1) for a in addresses}
    ns.wait(lambda: replicas(ns) == expected, f"replicas per nsqd {expected}")

    hot_entry = entry(ns, hot.tcp_address)
    ns.wait(lambda: entry(ns, hot.tcp_address).get("desiredReplicas") == 4, "the status showing 4 wanted")
    hot_entry = entry(ns, hot.tcp_address)
    assert hot_entry["depth"] == 1000, hot_entry
    assert "capped at 4" in hot_entry["scaleReason"], hot_entry
    assert ns.status()["desiredWorkers"] == 4 + 3 + 1
    assert ns.condition("ScalingActive")["status"] == "True"
    ns.wait_condition("Ready", "True", "AllWorkersReady")  # kwok runs the pods, 8 of them
    scaled = [e for e in ns.events() if e["reason"] == "DeploymentScaled"]
    assert scaled == [], "new Deployments start at the wanted count: no scale event for them"
    metrics = ns.operators[0].metrics()
    labels = f'consumer="orders",namespace="{ns.name}",nsqd="{hot.tcp_address}"'  # as exposed: sorted
    assert metrics.get(f"nsq_operator_nsqd_depth{{{labels}}}") == 1000, [k for k in metrics if "nsqd" in k]
    assert metrics[f"nsq_operator_nsqd_desired_replicas{{{labels}}}"] == 4

    # The warm nsqd's backlog goes (its channel emptied: nsqd's /channel/empty): down, but only
    # after the window, and with one event for the decision.
    requests.post(
        f"{warm.http_url}/channel/empty", params={"topic": TOPIC, "channel": CHANNEL}, timeout=5
    ).raise_for_status()
    warm_depth = (
        f'nsq_operator_nsqd_depth{{consumer="orders",namespace="{ns.name}",nsqd="{warm.tcp_address}"}}'
    )
    ns.wait(lambda: ns.operators[0].metrics().get(warm_depth) == 0, "the operator seeing the empty channel")
    assert replicas(ns)[warm.tcp_address] == 3, "no scale-down before the window"
    ns.wait(lambda: replicas(ns)[warm.tcp_address] == 1, "the warm nsqd back to min", timeout=WINDOW + 15)
    scaled = [e for e in ns.events() if e["reason"] == "DeploymentScaled"]
    assert len(scaled) == 1, [e["message"] for e in scaled]
    assert warm.tcp_address in scaled[0]["message"], scaled
    assert "down from 3" in scaled[0]["message"], scaled
    assert replicas(ns)[hot.tcp_address] == 4, "the hot nsqd kept its replicas"

    # A paused channel has no backlog to serve: the hot nsqd scales down too.
    requests.post(
        f"{hot.http_url}/channel/pause", params={"topic": TOPIC, "channel": CHANNEL}, timeout=5
    ).raise_for_status()
    ns.wait(lambda: replicas(ns)[hot.tcp_address] == 1, "a paused channel down to min", timeout=WINDOW + 15)

    # `paused: true` wins over the autoscaler.
    paused = autoscaled(nsq_cluster.lookupd_http_urls)
    paused["spec"]["paused"] = True
    ns.apply(paused)
    ns.wait(lambda: set(replicas(ns).values()) == {0}, "every Deployment at 0 while paused")
    assert "ScalingActive" not in {c["type"] for c in ns.status().get("conditions", [])}


def test_min_zero_creates_the_channel_then_keeps_no_pod_and_a_backlog_wakes_it(
    ns: Namespace, nsq_cluster: NsqCluster
) -> None:
    addresses = topic_everywhere(nsq_cluster)  # topics only: no channel anywhere
    ns.apply(autoscaled(nsq_cluster.lookupd_http_urls, minReplicas=0))
    ns.wait(lambda: sorted(replicas(ns)) == addresses, "a Deployment per nsqd")
    ns.wait(
        lambda: all(n.channel_stats(TOPIC, CHANNEL) != {} for n in nsq_cluster.nsqds),
        "the channel made on every nsqd by the operator",
    )
    ns.wait(lambda: set(replicas(ns).values()) == {0}, "no pod for idle nsqd", timeout=WINDOW + 15)

    sleeper = nsq_cluster.nsqds[1]
    backlog(sleeper, 150)  # kept by the channel the operator made: nothing lost while at zero
    ns.wait(lambda: replicas(ns)[sleeper.tcp_address] == 2, "a backlog waking its nsqd's Deployment")
    assert replicas(ns)[nsq_cluster.nsqds[0].tcp_address] == 0
    assert sleeper.channel_stats(TOPIC, CHANNEL)["depth"] == 150


def test_unreadable_stats_hold_the_replicas_and_say_why(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses = topic_everywhere(nsq_cluster)
    for nsqd in nsq_cluster.nsqds:
        nsqd.create_topic(TOPIC, CHANNEL)
    hung = nsq_cluster.nsqds[0]
    backlog(hung, 300)
    ns.apply(autoscaled(nsq_cluster.lookupd_http_urls, minReplicas=0))
    ns.wait(lambda: replicas(ns).get(hung.tcp_address) == 3, "3 replicas for the backlog")
    assert hung.process is not None
    pid = hung.process.pid
    os.kill(pid, signal.SIGSTOP)  # hung: lookupd still lists it, its /stats never answers
    try:
        ns.wait_condition("ScalingActive", "False", "StatsUnreadable")
        message = ns.condition("ScalingActive")["message"]
        assert hung.tcp_address in message, message
        assert "held" in message, message
        assert "NsqdStatsUnreadable" in ns.reasons()
        ns.wait(lambda: "held at 3" in entry(ns, hung.tcp_address).get("scaleReason", ""), "held in status")
        assert replicas(ns)[hung.tcp_address] == 3  # never down on missing data
        assert sorted(replicas(ns)) == addresses  # nothing deleted
    finally:
        os.kill(pid, signal.SIGCONT)
    ns.wait_condition("ScalingActive", "True", "BacklogPerNsqd")
    assert "NsqdStatsReadable" in ns.reasons()
    assert replicas(ns)[hung.tcp_address] == 3


def test_one_stats_read_per_nsqd_and_topic_however_many_consumers(
    ns: Namespace, nsq_cluster: NsqCluster
) -> None:
    topic_everywhere(nsq_cluster)
    for index in range(3):
        ns.apply(autoscaled(nsq_cluster.lookupd_http_urls, name=f"c{index}", channel=f"ch{index}"))
    ns.wait(lambda: all(len(ns.deployments(f"c{i}")) == 2 for i in range(3)), "every consumer's Deployments")
    operator = ns.operators[0]

    def counts() -> tuple[float, float]:
        found = operator.metrics()
        polls = sum(v for k, v in found.items() if k.startswith("nsq_operator_lookupd_polls_total{"))
        return found["nsq_operator_nsqd_stats_reads_total"], polls

    reads_before, polls_before = counts()
    ns.wait(lambda: counts()[1] >= polls_before + 10, "ten more lookups (1 s polls)", timeout=60)
    reads_after, polls_after = counts()
    per_poll = (reads_after - reads_before) / (polls_after - polls_before)
    # Two nsqd and one topic: two reads a poll when shared, six if each of three consumers read.
    assert 1.5 <= per_poll <= 3.5, (reads_before, reads_after, polls_before, polls_after)
