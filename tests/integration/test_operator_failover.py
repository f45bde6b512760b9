"""Two operators and one Lease: one reconciles, the other takes over when it dies, producers churning.

Real `nsq-operator run` processes against the rig's API server, with the election's production
timings (15 s lease, 10 s renew deadline, 2 s retry). The operator as two pods on the real node is
tested in tests/e2e/node/test_operator_pod.py.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.operators import TOPIC, Namespace, Operator, consumer, topic_everywhere
from tests.rig.nsq import NsqCluster

pytestmark = pytest.mark.kube

LEASE_DURATION = 15.0
TAKEOVER_SLACK = 5.0  # the standby's jittered retry, a reconcile, and kubectl's own time


def leader_of(ns: Namespace) -> Operator:
    def leading() -> list[Operator]:
        return [p for p in ns.operators if p.alive() and p.metrics().get("nsq_operator_leader") == 1]

    ns.wait(lambda: len(leading()) == 1, "exactly one leader", timeout=LEASE_DURATION + TAKEOVER_SLACK)
    return leading()[0]


def two_operators_electing(ns: Namespace, nsq_cluster: NsqCluster) -> tuple[list[str], Operator, Operator]:
    """Two operators sharing a Lease in place of the fixture's lone one, a consumer reconciled by them;
    the nsqd addresses, the leader and the standby."""
    for process in ns.operators:
        process.stop()
    ns.operators.clear()
    election = ("--leader-election-namespace", ns.name)
    ns.start_operator(*election)
    ns.start_operator(*election)
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    first = leader_of(ns)
    return addresses, first, next(p for p in ns.operators if p is not first)


def test_the_standby_takes_over_when_the_leader_is_killed(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses, first, standby = two_operators_electing(ns, nsq_cluster)
    assert standby.metrics()["nsq_operator_leader"] == 0
    lease = ns.get("lease", "nsq-operator")
    assert lease["spec"]["holderIdentity"].endswith(f"/{first.pid}")

    # A producer joins and one leaves just before the leader dies without a word.
    joined = nsq_cluster.add_nsqd()
    joined.create_topic(TOPIC)
    left = nsq_cluster.nsqds[0].tcp_address
    nsq_cluster.nsqds[0].stop()
    first.kill()
    killed = time.monotonic()
    expected = sorted([*(a for a in addresses if a != left), joined.tcp_address])
    ns.wait(
        lambda: sorted(ns.deployments()) == expected,
        "the standby following lookupd",
        timeout=LEASE_DURATION + TAKEOVER_SLACK + 10,
    )
    took = time.monotonic() - killed
    assert took <= LEASE_DURATION + TAKEOVER_SLACK + 2, f"takeover took {took:.1f} s"
    assert standby.metrics()["nsq_operator_leader"] == 1
    assert ns.get("lease", "nsq-operator")["spec"]["holderIdentity"].endswith(f"/{standby.pid}")
    assert left not in ns.deployments()
    # One Deployment per nsqd, none made twice.
    created = [e for e in ns.events() if e["reason"] == "DeploymentCreated"]
    assert len(created) == len(addresses) + 1, [e["message"] for e in created]
    assert "LookupdFailed" not in ns.reasons()  # the new leader waited for its own first answers


def test_a_clean_stop_hands_the_lease_over_at_once(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    _, first, standby = two_operators_electing(ns, nsq_cluster)
    first.stop()  # SIGTERM: the leader releases its Lease on the way out
    stopped = time.monotonic()
    ns.wait(lambda: standby.metrics().get("nsq_operator_leader") == 1, "the standby leading", timeout=15)
    took = time.monotonic() - stopped
    assert took < LEASE_DURATION / 2, f"the handover waited {took:.1f} s, as if the lease had expired"
    joined = nsq_cluster.add_nsqd()
    joined.create_topic(TOPIC)
    ns.wait(lambda: joined.tcp_address in ns.deployments(), "the new leader acting")
