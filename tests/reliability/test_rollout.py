"""An operator upgrade whose gradual rollout is cut short by a SIGKILL of the operator.

The real kube-controller-manager rolls the worker Deployments out and kwok's nodes make the new pods
Ready. Whether a Deployment is mid-rollout is judged from every state a watch of the API server saw,
independently of the operator's own code.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.operators import Namespace, consumer, topic_everywhere
from tests.integration.rollouts import DeploymentWatch, image, mid_rollout, most_at_once, settled
from tests.reliability.support import Row
from tests.rig.nsq import NsqCluster

NEW_IMAGE = "nsq-operator/worker:upgraded"
CONSUMERS = [f"r{i}" for i in range(6)]


@pytest.mark.kube
@pytest.mark.parametrize("nsq_cluster", [{"nsqd": 2}], indirect=True)
def test_a_rollout_interrupted_by_an_operator_sigkill_finishes_within_its_bound(
    operator_ns: Namespace, nsq_cluster: NsqCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row: Row
) -> None:
    ns = operator_ns
    row.order, row.section = 2.5, "Control"
    row.scenario = "An operator upgrade's gradual rollout interrupted by a SIGKILL of the operator"
    addresses = topic_everywhere(nsq_cluster)
    total = len(CONSUMERS) * len(addresses)
    row.load = (
        f"{len(CONSUMERS)} NsqConsumers x {len(addresses)} nsqd = {total} worker Deployments on kwok nodes"
    )
    for name in CONSUMERS:
        ns.apply(consumer(nsq_cluster.lookupd_http_urls, name=name))
    ns.wait(lambda: settled(ns, CONSUMERS, total), f"{total} settled Deployments", timeout=120)
    uids = {d["metadata"]["uid"] for name in CONSUMERS for d in ns.deployments(name).values()}

    # The upgrade: the operator restarted with another default worker image and a budget of 1.
    for process in ns.operators:
        process.stop()
    watch = DeploymentWatch(ns.kube, ns.name, tmp_path / "deployments.jsonl")
    monkeypatch.setenv("NSQ_OPERATOR_DEFAULT_WORKER_IMAGE", NEW_IMAGE)
    started = time.monotonic()
    first = ns.start_operator("--max-concurrent-rollouts", "1")

    def on_new_image() -> int:
        return sum(
            image(d) == NEW_IMAGE and not mid_rollout(d)
            for name in CONSUMERS
            for d in ns.deployments(name).values()
        )

    ns.wait(lambda: on_new_image() >= 3, "3 Deployments rolled out", timeout=120)
    first.kill()
    killed_at = on_new_image()
    row.fault = (
        f"restart the operator with a new default worker image and --max-concurrent-rollouts 1; SIGKILL it "
        f"when {killed_at} of {total} Deployments were rolled out; start it again"
    )
    ns.start_operator("--max-concurrent-rollouts", "1")
    try:
        ns.wait(lambda: settled(ns, CONSUMERS, total, NEW_IMAGE), f"all {total} on {NEW_IMAGE}", timeout=300)
    finally:
        watch.stop()
    took = time.monotonic() - started

    most = most_at_once(watch)
    after = {d["metadata"]["uid"] for name in CONSUMERS for d in ns.deployments(name).values()}
    row.see(
        f"at most {most} Deployment mid-rollout at any moment the API server reported (limit 1), "
        f"before and after the SIGKILL; all {total} on the new image {took:.0f} s after the upgrade"
    )
    row.see("no Deployment was deleted or recreated (the same uids before and after)")
    ns.wait(
        lambda: all(ns.condition("RolloutProgressing", n).get("reason") == "UpToDate" for n in CONSUMERS),
        "RolloutProgressing=False UpToDate on every NsqConsumer",
    )
    complete = sum("RolloutComplete" in ns.reasons(name) for name in CONSUMERS)
    row.see(f"RolloutProgressing=False UpToDate on every NsqConsumer; RolloutComplete events: {complete}")
    assert most == 1, f"{most} Deployments were mid-rollout at once"
    assert after == uids
    assert complete == len(CONSUMERS)
