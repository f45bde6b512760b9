"""Live state: the operator sees its Deployments through a watch and repairs them within seconds.

Everything is done to the Deployments the way people do it (kubectl set image, set env, scale,
delete) against the real API server; the real kube-controller-manager rolls them out.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.operators import Namespace, consumer, env_of, topic_everywhere
from tests.rig.nsq import NsqCluster

pytestmark = pytest.mark.kube

REPAIRED_WITHIN = 10.0  # seconds; polls are 1 s here, but the repair does not wait for one


def image_of(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def slow_polls(lookupd: list[str], **spec: Any) -> dict[str, Any]:
    """A consumer that polls once a minute: a repair within seconds cannot be a poll's doing."""
    body = consumer(lookupd, **spec)
    body["spec"]["lookupd"]["pollIntervalSeconds"] = 60
    return body


def test_edited_and_deleted_workers_are_put_back_within_seconds(
    ns: Namespace, nsq_cluster: NsqCluster
) -> None:
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(slow_polls(nsq_cluster.lookupd_http_urls))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    first = addresses[0]
    name = ns.deployments()[first]["metadata"]["name"]
    image = image_of(ns.deployments()[first])

    ns.kubectl("set", "image", f"deployment/{name}", "worker=elsewhere/impostor:1")
    ns.wait(lambda: image_of(ns.deployments()[first]) == image, "the image put back", timeout=REPAIRED_WITHIN)

    ns.kubectl("set", "env", f"deployment/{name}", "NSQD_TCP_ADDRESS=10.66.0.1:4150")
    ns.wait(
        lambda: env_of(ns.deployments()[first])["NSQD_TCP_ADDRESS"] == first,
        "NSQD_TCP_ADDRESS put back",
        timeout=REPAIRED_WITHIN,
    )
    assert "DeploymentUpdated" in ns.reasons()

    uid = ns.deployments()[first]["metadata"]["uid"]
    ns.kubectl("delete", "deployment", name, "--wait=false")
    ns.wait(
        lambda: first in ns.deployments() and ns.deployments()[first]["metadata"]["uid"] != uid,
        "the deleted Deployment made again",
        timeout=REPAIRED_WITHIN,
    )


def test_what_others_add_is_left_alone_and_steady_state_writes_nothing(
    ns: Namespace, nsq_cluster: NsqCluster
) -> None:
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    ns.wait_condition("Ready", "True", "AllWorkersReady")
    name = ns.deployments()[addresses[0]]["metadata"]["name"]
    ns.kubectl("set", "env", f"deployment/{name}", "TEAM_SETTING=kept")
    ns.kubectl("label", f"deployment/{name}", "team=billing")
    ns.wait(
        lambda: env_of(ns.deployments()[addresses[0]]).get("TEAM_SETTING") == "kept", "the user's env var"
    )
    time.sleep(3)  # let the rollout the user's change started settle

    versions = {a: d["metadata"]["resourceVersion"] for a, d in ns.deployments().items()}
    status_version = ns.consumer()["metadata"]["resourceVersion"]
    time.sleep(6)  # six polls
    assert {a: d["metadata"]["resourceVersion"] for a, d in ns.deployments().items()} == versions
    assert ns.consumer()["metadata"]["resourceVersion"] == status_version
    kept = ns.deployments()[addresses[0]]
    assert env_of(kept)["TEAM_SETTING"] == "kept"
    assert kept["metadata"]["labels"]["team"] == "billing"
    fields = ns.get("deployment", name, "--show-managed-fields")["metadata"]["managedFields"]
    assert {"nsq-operator", "kubectl-set", "kubectl-label"} <= {entry["manager"] for entry in fields}


def test_replicas_owned_by_an_autoscaler_are_never_overridden(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses = topic_everywhere(nsq_cluster)
    lookupd = nsq_cluster.lookupd_http_urls
    ns.apply(consumer(lookupd, worker={"replicasOwner": "External"}))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    name = ns.deployments()[addresses[0]]["metadata"]["name"]
    ns.kubectl("scale", f"deployment/{name}", "--replicas=3")  # what an HPA does, through /scale
    time.sleep(4)  # four polls
    assert ns.deployments()[addresses[0]]["spec"]["replicas"] == 3
    ns.wait(lambda: ns.status().get("desiredWorkers") == 4, "desiredWorkers counting the autoscaler's 3")

    # Pausing still wins (an HPA leaves a Deployment at 0 alone); resuming lets the count go again.
    ns.apply(consumer(lookupd, paused=True, worker={"replicasOwner": "External"}))
    ns.wait(lambda: {d["spec"]["replicas"] for d in ns.deployments().values()} == {0}, "paused at 0")
    ns.apply(consumer(lookupd, worker={"replicasOwner": "External"}))
    ns.wait(lambda: {d["spec"]["replicas"] for d in ns.deployments().values()} == {1}, "released to 1")

    # With the operator as the owner, a hand-made count is put back.
    ns.apply(consumer(lookupd))
    ns.kubectl("scale", f"deployment/{name}", "--replicas=3")
    ns.wait(lambda: ns.deployments()[addresses[0]]["spec"]["replicas"] == 1, "scaled back to replicasPerNsqd")


def test_observed_generation_moves_only_when_a_spec_was_applied(
    ns: Namespace, nsq_cluster: NsqCluster
) -> None:
    topic_everywhere(nsq_cluster)
    lookupd = nsq_cluster.lookupd_http_urls
    ns.apply(consumer(lookupd))
    ns.wait(lambda: ns.status().get("observedGeneration") == 1, "generation 1 observed")
    hijack = {"env": [{"name": "NSQD_TCP_ADDRESS", "value": "elsewhere:4150"}]}
    ns.apply(consumer(lookupd, worker=hijack))
    ns.wait_condition("SpecValid", "False", "InvalidSpec")
    assert ns.consumer()["metadata"]["generation"] == 2
    assert ns.status()["observedGeneration"] == 1
    assert ns.condition("SpecValid")["observedGeneration"] == 2
    ns.apply(consumer(lookupd, worker={"maxInFlight": 9}))
    ns.wait(lambda: ns.status().get("observedGeneration") == 3, "generation 3 applied")


def test_a_restarted_operator_does_not_repeat_its_events(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses = topic_everywhere(nsq_cluster)
    dead = "http://127.0.0.1:9"  # discard: nothing listens
    ns.apply(consumer([*nsq_cluster.lookupd_http_urls, dead]))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    ns.wait_condition("LookupdReachable", "True", "PartiallyReachable")
    ns.wait(lambda: "LookupdFailed" in ns.reasons(), "the LookupdFailed event")
    said = events_by_reason(ns)
    ns.wait_condition("Ready", "True", "AllWorkersReady")
    versions = {a: d["metadata"]["resourceVersion"] for a, d in ns.deployments().items()}

    for process in ns.operators:
        process.stop()
    ns.start_operator()
    time.sleep(5)  # five polls of the new operator
    assert events_by_reason(ns) == said
    # Nor does it rewrite what it finds: the Deployments it listed are judged as they are.
    assert {a: d["metadata"]["resourceVersion"] for a, d in ns.deployments().items()} == versions
    assert said["LookupdFailed"] == 1
    assert said["DeploymentCreated"] == 2


def events_by_reason(ns: Namespace) -> dict[str, int]:
    """Events by reason, counting each event's own count (the API server may aggregate)."""
    found: dict[str, int] = {}
    for event in ns.events():
        found[event["reason"]] = found.get(event["reason"], 0) + int(event.get("count") or 1)
    return found
