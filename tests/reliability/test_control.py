"""The operator under faults: lookupd outages, a flapping nsqd, the API server restarted, the operator killed.

The operator is the real `nsq-operator run` subprocess; nsqlookupd and nsqd are real; the control plane
is the rig's (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from nsq_operator import naming
from tests.integration.operators import TOPIC, Namespace, consumer, topic_everywhere
from tests.reliability.support import Api, FakeProducer, Row, Sizes, address_of, close_all
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.procs import Process, http_ok
from tests.rig.waiting import wait_for

SMALL_WORKERS = {"resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                               "limits": {"cpu": "10m", "memory": "16Mi"}}}  # fmt: skip


def events_with(ns: Namespace, reason: str, name: str = "orders") -> list[dict[str, Any]]:
    return [e for e in ns.events(name) if e["reason"] == reason]


def poke_registrations(nsqds: list[Nsqd], rounds: int = 3) -> None:
    """Make each nsqd re-register with restarted lookupds now rather than at its next 15-second ping.

    nsqd talks to lookupd only when it has something to say: creating a channel makes it send REGISTER,
    the first attempt finds the old connection dead, and the next one reconnects and registers every
    topic again.
    """
    for round_ in range(rounds):
        for nsqd in nsqds:
            nsqd.create_topic(TOPIC, f"poke-{round_}")
        time.sleep(0.3)


@pytest.mark.kube
@pytest.mark.parametrize("nsq_cluster", [{"nsqd": 2, "lookupd": 3}], indirect=True)
def test_lookupds_one_down_then_all_down_then_back(
    operator_ns: Namespace, nsq_cluster: NsqCluster, scale: Sizes, row: Row
) -> None:
    ns = operator_ns
    grace = scale.lookupd_grace
    row.order, row.section = 2.1, "Control"
    row.scenario = "One of three nsqlookupd down, then all three, then all back"
    row.load = f"one NsqConsumer, 2 then 3 nsqd, poll every 1 s, removal grace {grace} s"
    row.fault = ("stop lookupd-0; an nsqd joins; stop lookupd-1 and -2; an nsqd leaves; wait past the "
                 "grace; restart all three (empty)")  # fmt: skip
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls, nsqdRemovalGraceSeconds=grace, worker=SMALL_WORKERS))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    ns.wait_condition("LookupdReachable", "True", "AllReachable")
    first, second, third = nsq_cluster.lookupds

    # One lookupd down: the other two still give the whole union, and a new nsqd still gets its worker.
    first.process.stop()
    ns.wait_condition("LookupdReachable", "True", "PartiallyReachable")
    partial = ns.condition("LookupdReachable")["message"]
    assert first.http_url in partial
    assert "2 of 3" in partial
    joined = nsq_cluster.add_nsqd()
    joined.create_topic(TOPIC)
    ns.wait(lambda: joined.tcp_address in ns.deployments(), "a worker for the nsqd that joined")
    row.see(f"LookupdReachable=True PartiallyReachable: '{partial}'")
    before = ns.uids()
    assert len(before) == 3

    # All down, and an nsqd leaves meanwhile: nobody can tell, so nothing is deleted.
    second.process.stop()
    third.process.stop()
    ns.wait_condition("LookupdReachable", "False", "Unreachable")
    assert ns.condition("Ready")["status"] == "Unknown"
    leaving = nsq_cluster.nsqds[0]
    leaving.stop()
    time.sleep(grace + 3)
    assert ns.uids() == before
    assert not events_with(ns, "DeploymentDeleted")
    failed = events_with(ns, "LookupdFailed")
    assert sorted(
        url for url in nsq_cluster.lookupd_http_urls if any(url in e["message"] for e in failed)
    ) == sorted(nsq_cluster.lookupd_http_urls)
    assert len(failed) == 3
    assert all(e["type"] == "Warning" for e in failed)
    row.see(
        f"LookupdReachable=False Unreachable, Ready=Unknown LookupdUnreachable; one Warning "
        f"LookupdFailed per lookupd ({len(failed)}); nothing deleted {grace + 3} s after an nsqd left"
    )

    # Back, empty: nsqd registers again (at once when poked, else at its 15-second ping); the nsqd that
    # left loses its worker after the grace, the others keep theirs.
    for lookupd in (first, second, third):
        lookupd.process.start()
        lookupd.process.wait_until(http_ok(f"{lookupd.http_url}/ping"), timeout=30)
    restarted = time.monotonic()
    live = [n for n in nsq_cluster.nsqds if n is not leaving]
    if scale.lookupd_poke:
        poke_registrations(live)
    nsq_cluster.wait_for_producers(TOPIC, [n.tcp_address for n in live], timeout=40)
    registered_after = time.monotonic() - restarted
    ns.wait(lambda: len(events_with(ns, "LookupdRecovered")) == 3, "a LookupdRecovered per lookupd")
    ns.wait(lambda: leaving.tcp_address not in ns.deployments(), "the left nsqd's worker deleted",
            timeout=grace + 30)  # fmt: skip
    ns.wait_condition("Ready", "True", "AllWorkersReady")
    ns.wait_condition("LookupdReachable", "True", "AllReachable")
    after = ns.uids()
    assert after == {a: u for a, u in before.items() if a != leaving.tcp_address}
    assert len(events_with(ns, "DeploymentDeleted")) == 1
    row.see(
        f"the restarted lookupds listed the live nsqds again {registered_after:.1f} s later"
        + (" (poked)" if scale.lookupd_poke else " (nsqd's own ping)")
        + "; 3 LookupdRecovered events; the left nsqd's Deployment deleted after the grace "
        "(DeploymentDeleted), the two live ones kept their uid; Ready=True AllWorkersReady"
    )


@pytest.mark.kube
@pytest.mark.parametrize("nsq_cluster", [{"nsqd": 2}], indirect=True)
def test_a_flapping_nsqd_causes_no_deployment_churn(
    operator_ns: Namespace, nsq_cluster: NsqCluster, scale: Sizes, row: Row
) -> None:
    ns = operator_ns
    row.order, row.section = 2.2, "Control"
    row.scenario = "An nsqd flapping: leaving and coming back within the grace period"
    row.load = "one NsqConsumer, 2 nsqd, poll every 1 s, removal grace 60 s"
    row.fault = f"{scale.flaps} flaps: SIGTERM or SIGKILL one nsqd, restart it once the operator saw it gone"
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls, nsqdRemovalGraceSeconds=60, worker=SMALL_WORKERS))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    ns.wait_condition("Ready", "True")
    before = {a: (d["metadata"]["uid"], d["metadata"]["generation"]) for a, d in ns.deployments().items()}
    flapping = nsq_cluster.nsqds[1]
    missing_seen = 0
    for flap in range(scale.flaps):
        if flap % 2:
            flapping.kill()
        else:
            flapping.stop()
        ns.wait(lambda: ns.missing() == [flapping.tcp_address], "the operator to see the nsqd gone")
        missing_seen += 1
        flapping.start()
        ns.wait(lambda: not ns.missing(), "the operator to see the nsqd back")
    after = {a: (d["metadata"]["uid"], d["metadata"]["generation"]) for a, d in ns.deployments().items()}
    reasons = ns.reasons()
    assert after == before  # same uid, and no update either (generation unchanged)
    assert reasons.count("DeploymentCreated") == 2
    assert not {"DeploymentDeleted", "DeploymentUpdated", "DeploymentScaled"} & set(reasons)
    assert len(ns.get("replicasets")["items"]) == 2
    ns.wait_condition("Ready", "True", "AllWorkersReady")
    row.see(
        f"status.nsqds[].missingSince set and cleared {missing_seen} times; Deployments kept their uid "
        "and generation; events: only the 2 DeploymentCreated from the start; 2 ReplicaSets"
    )


# -- the API server restarted, the operator SIGKILLed mid-reconcile ----------------------------------------


def restart_api_server(kube: KubeCluster, kill: bool, while_down: Callable[[], None] | None = None) -> float:
    """Stop (SIGTERM, or SIGKILL when `kill`) kube-apiserver, run `while_down`, start it again with the
    same flags; the seconds it was away."""
    index, old = next((i, p) for i, p in enumerate(kube.processes) if p.name == "kube-apiserver")
    began = time.monotonic()
    if kill:
        old.kill()
    else:
        old.stop(timeout=90)
    if while_down is not None:
        while_down()
    kube.processes[index] = Process(old.name, old.argv, old.log_path).start()
    kube.wait_for(kube._healthy, timeout=90, what="the restarted API server healthy")
    return time.monotonic() - began


@pytest.mark.kube
@pytest.mark.parametrize("nsq_cluster", [{"nsqd": 0}], indirect=True)
def test_the_api_server_restarted_and_the_operator_killed_mid_reconcile(
    private_ns: Namespace, nsq_cluster: NsqCluster, scale: Sizes, row: Row, request: pytest.FixtureRequest
) -> None:
    ns = private_ns
    kube = ns.kube
    api = Api(kube)
    lookupd = nsq_cluster.lookupds[0]
    count = scale.api_producers
    row.order, row.section = 2.3, "Control"
    row.scenario = "The API server restarted, the operator SIGKILLed mid-reconcile"
    row.load = f"one NsqConsumer, {count} producers registered with a real nsqlookupd over its TCP protocol"
    row.fault = (f"SIGKILL the operator while it creates the Deployments, start a new one; restart "
                 f"kube-apiserver {scale.api_restarts} time(s) (SIGKILL) while "
                 "2 producers leave and 3 join")  # fmt: skip
    next_port = iter(range(20_000, 30_000))
    producers = {p.address: p for p in (FakeProducer(lookupd.tcp_address, TOPIC, next(next_port))
                                        for _ in range(count))}  # fmt: skip
    request.addfinalizer(lambda: close_all(producers.values()))
    ever = set(producers)

    def deployments() -> dict[str, dict[str, Any]]:
        return {address_of(d): d for d in api.deployments("reliability", "orders")}

    operator = ns.start_operator()
    ns.apply(consumer([lookupd.http_url], nsqdRemovalGraceSeconds=2, worker=SMALL_WORKERS))
    wait_for(lambda: deployments(), 30, "the first Deployment", interval=0.02)
    operator.kill()
    time.sleep(0.5)
    at_kill = {a: d["metadata"]["uid"] for a, d in deployments().items()}
    row.see(f"the operator was SIGKILLed with {len(at_kill)} of {count} Deployments made")

    ns.start_operator()
    took = []
    for _ in range(scale.api_restarts):
        ns.wait(lambda: ns.status().get("nsqdCount") == len(producers), "the operator converged", 60)

        def come_and_go() -> None:  # while the API server is away
            for address in sorted(producers)[-2:]:  # the newest: those made before the kill stay
                producers.pop(address).close()
            for _ in range(3):
                added = FakeProducer(lookupd.tcp_address, TOPIC, next(next_port))
                producers[added.address] = added
                ever.add(added.address)
            time.sleep(2)

        # SIGKILL, a crash. (After a graceful SIGTERM restart of the rig's API server, which takes 30 s
        # or more, kube-controller-manager's pod informer stayed stale - "read version 366 is not as new
        # as written version 583" - so Deployments' readyReplicas never moved: a rig limit, not ours.)
        took.append(restart_api_server(kube, kill=True, while_down=come_and_go))

    want = sorted(producers)
    wait_for(lambda: sorted(deployments()) == want, 90, "one Deployment per producer", interval=0.5)
    wait_for(
        lambda: ns.condition("Ready").get("reason") == "AllWorkersReady",
        90,
        "Ready=True",
        interval=0.5,
        describe=lambda: (
            ns.condition("Ready"),
            sorted(
                (d["metadata"]["name"], d.get("status", {}).get("readyReplicas"))
                for d in ns.get("deployments")["items"]
            ),
            sorted(
                (
                    p["metadata"]["name"],
                    p["status"].get("phase"),
                    [c["status"] for c in p["status"].get("conditions", []) if c["type"] == "Ready"],
                )
                for p in ns.get("pods")["items"]
            ),
        ),
    )
    final = deployments()
    assert all(d["metadata"]["name"] == naming.worker_name("orders", a) for a, d in final.items())
    kept = {a: u for a, u in at_kill.items() if a in producers}
    assert {a: final[a]["metadata"]["uid"] for a in kept} == kept  # made before the kill: adopted, not redone
    assert api.count("reliability", "deployments") == len(want)
    assert api.count("reliability", "replicasets") == len(want)
    wait_for(lambda: api.count("reliability", "pods") == len(want), 60, "one pod per Deployment")
    status = ns.status()
    assert status["nsqdCount"] == len(want)
    created = ns.reasons().count("DeploymentCreated")
    assert created <= len(ever)
    row.see(
        f"kube-apiserver away {max(took):.1f} s at most; the operator logged the refused calls and "
        "reconnected by itself; "
        f"converged to {len(want)} Deployments = {len(want)} producers, {len(want)} ReplicaSets, "
        f"{len(want)} pods; the {len(kept)} made before the kill kept their uid; "
        f"{created} DeploymentCreated events for {len(ever)} producers ever; Ready=True AllWorkersReady"
    )
