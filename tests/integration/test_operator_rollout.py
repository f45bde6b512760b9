"""Gradual rollouts on the real control plane: a new pod template reaches the worker Deployments a
bounded number at a time, operator-wide.

The real kube-controller-manager rolls the Deployments out and kwok's nodes make the new pods Ready.
Whether a Deployment is mid-rollout is judged here from every state a watch of the API server saw,
the way `kubectl rollout status` judges it, independently of the operator's own code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.operators import Namespace, consumer, env_of, topic_everywhere
from tests.integration.rollouts import DeploymentWatch, image, mid_rollout, settled
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster

pytestmark = pytest.mark.kube

NEW_IMAGE = "nsq-operator/worker:upgraded"
CONSUMERS = ["c0", "c1", "c2", "c3"]


def up_to_date(ns: Namespace, name: str) -> Callable[[], bool]:
    return lambda: ns.condition("RolloutProgressing", name).get("reason") == "UpToDate"


def rollout_events(ns: Namespace, name: str) -> list[str]:
    return [e["reason"] for e in ns.events(name) if e["reason"].startswith("Rollout")]


def test_an_operator_upgrade_rolls_the_workers_out_two_at_a_time(
    ns: Namespace, nsq_cluster: NsqCluster, kube_cluster: KubeCluster, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    addresses = topic_everywhere(nsq_cluster)
    lookupd = nsq_cluster.lookupd_http_urls
    for name in CONSUMERS:
        ns.apply(consumer(lookupd, name=name))
    total = len(CONSUMERS) * len(addresses)
    ns.wait(lambda: settled(ns, CONSUMERS, total), f"{total} settled Deployments", timeout=90)
    old_image = image(next(iter(ns.deployments("c0").values())))
    assert old_image != NEW_IMAGE
    ns.wait(
        lambda: all(ns.condition("RolloutProgressing", n).get("reason") == "UpToDate" for n in CONSUMERS),
        "RolloutProgressing=False UpToDate everywhere",
    )

    # The upgrade: the same operator, restarted with another default worker image (as `helm upgrade`
    # with a new worker.defaultImage does), so every Deployment's pod template changes.
    for process in ns.operators:
        process.stop()
    watch = DeploymentWatch(kube_cluster, ns.name, tmp_path / "deployments.jsonl")
    monkeypatch.setenv("NSQ_OPERATOR_DEFAULT_WORKER_IMAGE", NEW_IMAGE)
    operator = ns.start_operator("--max-concurrent-rollouts", "2")
    seen_reasons: set[str] = set()

    def done() -> bool:
        seen_reasons.update(str(ns.condition("RolloutProgressing", n).get("reason")) for n in CONSUMERS)
        return settled(ns, CONSUMERS, total, NEW_IMAGE)

    try:
        ns.wait(done, f"all {total} Deployments on {NEW_IMAGE}", timeout=240)
    finally:
        watch.stop()

    most, gradual = 0, False
    for state in watch.timeline():
        rolling = [name for name, d in state.items() if mid_rollout(d)]
        most = max(most, len(rolling))
        images = {image(d) for d in state.values()}
        finished_new = any(image(d) == NEW_IMAGE and not mid_rollout(d) for d in state.values())
        gradual = gradual or (finished_new and old_image in images)
    assert most <= 2, f"{most} Deployments were mid-rollout at once"
    assert most == 2, "the budget of 2 was never used in full"
    assert gradual, "no Deployment finished on the new image while another still had the old one"

    waited = 0
    for name in CONSUMERS:
        ns.wait(
            up_to_date(ns, name),
            f"{name}: RolloutProgressing=False UpToDate",
        )
        said = rollout_events(ns, name)
        assert said.count("RolloutStarted") == 1, said
        assert said.count("RolloutComplete") == 1, said
        waited += "RolloutWaiting" in said
    # Two places for 2 Deployments a consumer: at most the first consumer found room for all of its own.
    assert waited >= len(CONSUMERS) - 1
    assert "WaitingForRolloutBudget" in seen_reasons
    metrics = operator.metrics()
    assert metrics["nsq_operator_rollout_limit"] == 2
    assert metrics["nsq_operator_rollouts_started_total"] == total
    assert metrics["nsq_operator_rollouts_in_progress"] == 0


def test_waiting_deployments_keep_their_template_but_follow_their_replicas(
    ns: Namespace, nsq_cluster: NsqCluster
) -> None:
    """A rollout that cannot finish (its new pods fit no node) holds the only place: another consumer's
    new template waits, its replica count still applies, and the blocked one's fix frees the place."""
    addresses = topic_everywhere(nsq_cluster)
    lookupd = nsq_cluster.lookupd_http_urls
    for process in ns.operators:
        process.stop()
    ns.start_operator("--max-concurrent-rollouts", "1")
    ns.apply(consumer(lookupd, name="stuck"))
    ns.apply(consumer(lookupd, name="other"))
    ns.wait(lambda: settled(ns, ["stuck", "other"], 2 * len(addresses)), "settled Deployments")

    ns.apply(consumer(lookupd, name="stuck", worker={"nodeSelector": {"no-such-node": "true"}}))
    ns.wait(
        lambda: ns.condition("RolloutProgressing", "stuck").get("reason") == "WaitingForRolloutBudget",
        "stuck: one Deployment rolling, the others waiting",
    )
    ns.apply(consumer(lookupd, name="other", worker={"maxInFlight": 7}))
    ns.wait(
        lambda: ns.condition("RolloutProgressing", "other").get("reason") == "WaitingForRolloutBudget",
        "other: waiting for the place stuck holds",
    )
    message = ns.condition("RolloutProgressing", "other")["message"]
    count = len(addresses)
    assert message.startswith(f"0 of {count} worker Deployments updated, 0 rolling out, {count} waiting"), (
        message
    )
    assert "at most 1 at a time, operator-wide" in message
    assert "RolloutWaiting" in rollout_events(ns, "other")

    ns.apply(consumer(lookupd, name="other", worker={"maxInFlight": 7, "replicasPerNsqd": 2}))
    ns.wait(
        lambda: {d["spec"]["replicas"] for d in ns.deployments("other").values()} == {2},
        "other's Deployments scaled to 2 while they wait",
    )
    for deployment in ns.deployments("other").values():
        assert env_of(deployment)["NSQ_MAX_IN_FLIGHT"] == "200"  # the old template, kept
    stuck = [d for d in ns.deployments("stuck").values() if "nodeSelector" in d["spec"]["template"]["spec"]]
    assert len(stuck) == 1, "exactly one of stuck's Deployments got the new template"

    ns.apply(consumer(lookupd, name="stuck"))  # the fix: its rolling Deployment gets it at once
    ns.wait(
        lambda: all(
            env_of(d)["NSQ_MAX_IN_FLIGHT"] == "7" and d["spec"]["replicas"] == 2 and not mid_rollout(d)
            for d in ns.deployments("other").values()
        ),
        "other rolled out, at 2 replicas",
        timeout=120,
    )
    for name in ("stuck", "other"):
        ns.wait(
            up_to_date(ns, name),
            f"{name}: UpToDate",
        )
    assert not any("nodeSelector" in d["spec"]["template"]["spec"] for d in ns.deployments("stuck").values())
    assert rollout_events(ns, "other").count("RolloutComplete") == 1
