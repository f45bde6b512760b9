"""The operator against a real control plane and a real NSQ cluster.

The operator runs as a real `nsq-operator run` subprocess with the rig's admin kubeconfig, watching
one fresh namespace. kwok's fake nodes run the pods (Running and Ready, no containers); the real
kube-controller-manager rolls Deployments out and garbage-collects them through owner references.
Polls every second and grace periods of a few seconds keep each test to seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nsq_operator import naming
from tests.integration.operators import CHANNEL, ROOT, TOPIC, Namespace, consumer, env_of, topic_everywhere
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster

pytestmark = pytest.mark.kube


def test_one_worker_deployment_per_nsqd_follows_lookupd(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls, nsqdRemovalGraceSeconds=5))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")

    owner = {
        "apiVersion": "nsqoperator.dev/v1alpha1",
        "kind": "NsqConsumer",
        "name": "orders",
        "uid": ns.consumer()["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for address, deployment in ns.deployments().items():
        meta = deployment["metadata"]
        assert meta["name"] == naming.worker_name("orders", address)
        assert meta["ownerReferences"] == [owner]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "nsq-operator"
        assert env_of(deployment)["NSQD_TCP_ADDRESS"] == address
        assert env_of(deployment)["NSQ_TOPIC"] == TOPIC

    # kwok runs the pods, so the workers become ready and so does the consumer.
    ns.wait_condition("Ready", "True", "AllWorkersReady")
    pods = ns.get("pods", "-l", "nsqoperator.dev/consumer=orders")["items"]
    assert [p["status"]["qosClass"] for p in pods] == ["Guaranteed", "Guaranteed"]
    status = ns.status()
    assert (status["nsqdCount"], status["desiredWorkers"], status["readyWorkers"]) == (2, 2, 2)
    assert status["observedGeneration"] == ns.consumer()["metadata"]["generation"]
    assert sorted(n["address"] for n in status["nsqds"]) == addresses
    assert ns.condition("LookupdReachable")["reason"] == "AllReachable"
    assert ns.condition("SpecValid")["status"] == "True"
    header, row = ns.kubectl("get", "nsqc").stdout.splitlines()[:2]
    assert header.split() == ["NAME", "TOPIC", "CHANNEL", "NSQD", "REPLICAS", "READY", "STATUS", "AGE"]
    assert row.split()[:7] == ["orders", TOPIC, CHANNEL, "2", "2", "2", "AllWorkersReady"]
    assert "orders" in ns.kubectl("get", "nsq").stdout  # the category
    assert ns.reasons().count("DeploymentCreated") == 2

    # A new nsqd gets a worker.
    third = nsq_cluster.add_nsqd()
    third.create_topic(TOPIC)
    ns.wait(lambda: third.tcp_address in ns.deployments(), "a Deployment for the new nsqd")

    # An nsqd that leaves keeps its worker through the grace, then loses it.
    gone = nsq_cluster.nsqds[0]
    gone_uid = ns.uids()[gone.tcp_address]
    gone.stop()
    ns.wait(lambda: ns.missing() == [gone.tcp_address], "the gone nsqd in its grace period")
    assert ns.uids()[gone.tcp_address] == gone_uid
    ns.wait(lambda: gone.tcp_address not in ns.deployments(), "the gone nsqd's Deployment deleted")
    assert sorted(ns.deployments()) == sorted(n.tcp_address for n in nsq_cluster.nsqds[1:])
    ns.wait(lambda: "DeploymentDeleted" in ns.reasons(), "a DeploymentDeleted event")
    ns.wait(lambda: ns.status().get("nsqdCount") == 2 and not ns.missing(), "the status without it")
    assert set(ns.reasons()) == {"DeploymentCreated", "DeploymentDeleted"}  # news only, no chatter


def test_an_nsqd_back_within_the_grace_keeps_its_worker(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls, nsqdRemovalGraceSeconds=60))
    ns.wait(lambda: len(ns.deployments()) == 2, "two Deployments")
    before = ns.uids()
    flapping = nsq_cluster.nsqds[1]
    flapping.stop()
    ns.wait(lambda: ns.missing() == [flapping.tcp_address], "the stopped nsqd in its grace period")
    flapping.start()  # same data directory: it registers the topic with lookupd again
    ns.wait(lambda: not ns.missing(), "the grace period over without a deletion")
    assert ns.uids() == before
    assert "DeploymentDeleted" not in ns.reasons()


def test_lookupd_down_deletes_nothing_and_says_so(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls, nsqdRemovalGraceSeconds=1))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    before = ns.uids()

    lookupd = nsq_cluster.lookupds[0]
    lookupd.process.stop()
    ns.wait_condition("LookupdReachable", "False", "Unreachable")
    assert ns.condition("Ready")["status"] == "Unknown"
    warnings = [e for e in ns.events() if e["reason"] == "LookupdFailed"]
    assert [w["type"] for w in warnings] == ["Warning"]
    assert lookupd.http_url in warnings[0]["message"]

    # Every nsqd goes too, and we wait well past the grace: nobody can tell, so nothing is deleted.
    for nsqd in nsq_cluster.nsqds:
        nsqd.stop()
    time.sleep(4)
    assert ns.uids() == before
    assert "DeploymentDeleted" not in ns.reasons()
    assert ns.reasons().count("LookupdFailed") == 1  # one warning when it failed, not one per poll

    # lookupd back: now it says the nsqds are gone, the grace runs, and the workers go.
    lookupd.process.start()
    ns.wait(lambda: "LookupdRecovered" in ns.reasons(), "a LookupdRecovered event")
    ns.wait(lambda: ns.deployments() == {}, "the gone nsqds' workers deleted")
    ns.wait_condition("Ready", "True", "NoProducers")


def test_pause_resume_and_spec_changes(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses = topic_everywhere(nsq_cluster)
    lookupd = nsq_cluster.lookupd_http_urls
    ns.apply(consumer(lookupd))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    ns.wait_condition("Ready", "True")

    # Steady state: polls leave the Deployments alone.
    versions = {a: d["metadata"]["resourceVersion"] for a, d in ns.deployments().items()}
    time.sleep(3)
    assert {a: d["metadata"]["resourceVersion"] for a, d in ns.deployments().items()} == versions

    def replicas() -> set[int]:
        return {d["spec"]["replicas"] for d in ns.deployments().values()}

    ns.apply(consumer(lookupd, paused=True))
    ns.wait(lambda: replicas() == {0}, "every worker scaled to 0")
    ns.wait_condition("Ready", "False", "Paused")
    assert "DeploymentScaled" in ns.reasons()
    ns.apply(consumer(lookupd, paused=False))
    ns.wait(lambda: replicas() == {1}, "every worker scaled back to 1")

    def hashes() -> dict[str, str]:
        key = "nsqoperator.dev/spec-hash"
        return {a: d["metadata"]["annotations"][key] for a, d in ns.deployments().items()}

    before = hashes()
    ns.apply(consumer(lookupd, worker={"maxInFlight": 7}))
    ns.wait(
        lambda: {env_of(d)["NSQ_MAX_IN_FLIGHT"] for d in ns.deployments().values()} == {"7"},
        "NSQ_MAX_IN_FLIGHT=7 in every Deployment",
    )
    after = hashes()
    assert all(after[a] != before[a] for a in after)
    assert "DeploymentUpdated" in ns.reasons()
    generation = ns.consumer()["metadata"]["generation"]
    ns.wait(lambda: ns.status().get("observedGeneration") == generation, "observedGeneration caught up")


def test_deleting_the_consumer_garbage_collects_its_workers(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    ns.wait(lambda: len(ns.get("pods", "-l", "nsqoperator.dev/consumer=orders")["items"]) == 2, "two pods")
    ns.kubectl("delete", "nsqconsumer", "orders", "--timeout=30s")
    ns.wait(lambda: ns.deployments() == {}, "the garbage collector removing the Deployments", 60)
    ns.wait(lambda: not ns.get("pods", "-l", "nsqoperator.dev/consumer=orders")["items"], "the pods gone", 60)


def test_the_api_server_refuses_what_the_schema_forbids(
    crd: Path, kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    ns = Namespace(kube_cluster, kube_namespace, tmp_path)
    refused = {
        "spec.topic": consumer(["http://lookupd:4161"], topic="not a topic"),
        "httpAddresses": consumer(["lookupd:4161"]),
        "maxInFlight": consumer(["http://lookupd:4161"], worker={"maxInFlight": 2501}),
        "63": consumer(["http://lookupd:4161"], name="x" * 64),
    }
    for says, body in refused.items():
        result = ns.apply(body, check=False)
        assert result.returncode != 0, says
        assert says in result.stderr
    for example in sorted((ROOT / "examples").glob("nsqconsumer-*.yaml")):
        ns.kubectl("apply", "--dry-run=server", "-f", str(example))
    # What the user leaves out, the API server fills in.
    ns.apply(consumer(["http://lookupd:4161"], name="defaults"))
    spec = ns.consumer("defaults")["spec"]
    assert spec["worker"]["maxInFlight"] == 200
    assert spec["worker"]["resources"]["limits"]["cpu"] == "1"
    assert spec["paused"] is False
    ns.kubectl("delete", "nsqconsumer", "defaults")


def test_a_spec_the_operator_refuses_is_reported(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    topic_everywhere(nsq_cluster)
    hijack = {"env": [{"name": "NSQD_TCP_ADDRESS", "value": "elsewhere:4150"}]}
    ns.apply(consumer(nsq_cluster.lookupd_http_urls, worker=hijack))
    ns.wait_condition("SpecValid", "False", "InvalidSpec")
    assert "spec.worker.env[0].name" in ns.condition("SpecValid")["message"]
    assert ns.condition("Ready")["reason"] == "InvalidSpec"
    ns.wait(lambda: "InvalidSpec" in ns.reasons(), "an InvalidSpec event")
    assert ns.deployments() == {}

    ns.apply(consumer(nsq_cluster.lookupd_http_urls))
    ns.wait(lambda: len(ns.deployments()) == 2, "Deployments once the spec is fixed")
    ns.wait_condition("SpecValid", "True")


def test_two_operators_by_mistake_and_a_restart_keep_one_worker_per_nsqd(
    ns: Namespace, nsq_cluster: NsqCluster
) -> None:
    ns.start_operator()
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    ns.wait_condition("Ready", "True")
    uids = ns.uids()
    time.sleep(3)
    assert ns.uids() == uids
    assert len(ns.get("deployments")["items"]) == 2
    assert ns.reasons().count("DeploymentCreated") == 2  # the other operator's 409s are not news

    # Both stop; a fresh one adopts what exists instead of making it again.
    for process in ns.operators:
        process.stop()
    ns.start_operator()
    time.sleep(3)
    assert ns.uids() == uids
    assert ns.reasons().count("DeploymentCreated") == 2
    ns.wait_condition("Ready", "True")
