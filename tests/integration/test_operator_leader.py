"""Leader election against the rig's real API server: one leader, takeover on crash and release, fencing.

Each test runs real `LeaderElection`s in one event loop, each with its own ApiClient from the rig's admin
kubeconfig, contending for one Lease in a fresh namespace. Timings are small (3 s lease, 2 s renew
deadline, 0.5 s retry) and every bound asserted is derived from them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import config

from nsq_operator.leader import JITTER_FACTOR, LeaderElection, format_time, parse_time
from tests.rig.kube import KubeCluster
from tests.rig.procs import free_port

pytestmark = pytest.mark.kube

LEASE = "nsq-operator"
LEASE_DURATION, RENEW_DEADLINE, RETRY = 3.0, 2.0, 0.5
MAX_STANDBY_WAIT = RETRY * (1 + JITTER_FACTOR)  # the longest a standby sleeps between two reads
SLACK = 1.0  # for scheduling and API latency on a busy machine


@dataclass
class Candidate:
    """One elector, its own API client, and every on_change it made (with monotonic and wall times)."""

    identity: str
    api: Any  # a kubernetes.client.ApiClient (untyped)
    elector: LeaderElection
    changes: list[tuple[bool, float, datetime]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def on_change(self, leading: bool) -> None:
        self.changes.append((leading, time.monotonic(), datetime.now(UTC)))

    @property
    def history(self) -> list[bool]:
        return [leading for leading, _, _ in self.changes]

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self.on_change), name=self.identity)

    async def crash(self) -> None:
        """Cancel the elector without releasing: what a killed process leaves behind."""
        assert self.task is not None
        self.task.cancel()
        with suppress(asyncio.CancelledError):
            await self.task


def candidate(kube: KubeCluster, namespace: str, identity: str) -> Candidate:
    loader: Any = config  # the loaders are untyped
    api = loader.new_client_from_config(config_file=str(kube.kubeconfig))
    elector = LeaderElection(
        api,
        namespace,
        LEASE,
        identity,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY,
    )
    return Candidate(identity, api, elector)


@asynccontextmanager
async def candidates(kube: KubeCluster, namespace: str, count: int) -> AsyncIterator[list[Candidate]]:
    """`count` electors started at once (so they race to create the Lease), all stopped afterwards."""
    made = [candidate(kube, namespace, f"replica-{index}") for index in range(count)]
    for each in made:
        each.start()
    try:
        yield made
    finally:
        for each in made:
            if each.task is not None:
                each.task.cancel()
        await asyncio.gather(*(each.task for each in made if each.task is not None), return_exceptions=True)
        for each in made:
            each.api.close()


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate` until it holds; the monotonic time it did, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic()


async def read_lease(kube: KubeCluster, namespace: str) -> dict[str, Any]:
    spec: dict[str, Any] = (await asyncio.to_thread(kube.get_json, "lease", LEASE, "-n", namespace))["spec"]
    return spec


def renewed(spec: dict[str, Any]) -> datetime:
    moment = parse_time(spec.get("renewTime"))
    assert moment is not None, spec
    return moment


async def one_leader(group: list[Candidate]) -> tuple[Candidate, list[Candidate]]:
    """Wait for a leader; it and the others. A fresh Lease is taken within one round trip or two."""
    await until(lambda: any(c.elector.is_leader for c in group), RETRY + SLACK, "a leader")
    leaders = [c for c in group if c.elector.is_leader]
    assert len(leaders) == 1, [c.identity for c in leaders]
    return leaders[0], [c for c in group if c is not leaders[0]]


def test_two_electors_make_exactly_one_leader_named_in_the_lease(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    async def scenario() -> None:
        async with candidates(kube_cluster, kube_namespace, 2) as group:
            leader, (standby,) = await one_leader(group)
            first = await read_lease(kube_cluster, kube_namespace)
            assert first["holderIdentity"] == leader.identity
            assert first["leaseTransitions"] == 0
            assert first["leaseDurationSeconds"] == LEASE_DURATION
            # For more than a lease duration (several renewals), leadership stays where it is.
            end = time.monotonic() + LEASE_DURATION + 2 * RETRY
            while time.monotonic() < end:
                assert leader.elector.is_leader
                assert not standby.elector.is_leader
                await asyncio.sleep(0.05)
            later = await read_lease(kube_cluster, kube_namespace)
            assert later["holderIdentity"] == leader.identity
            assert later["leaseTransitions"] == 0
            assert later["acquireTime"] == first["acquireTime"]
            assert renewed(later) > renewed(first)  # the leader renews
            assert leader.history == [True]
            assert standby.history == []

    asyncio.run(scenario())


def test_a_crashed_leader_is_replaced_once_its_lease_expires(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    async def scenario() -> None:
        async with candidates(kube_cluster, kube_namespace, 2) as group:
            leader, (standby,) = await one_leader(group)
            await leader.crash()
            crashed_at = time.monotonic()
            # Follow the Lease until the standby leads, remembering the crashed leader's last renewal
            # (a renewal already in flight at the crash may still land).
            last_renewal = renewed(await read_lease(kube_cluster, kube_namespace))
            bound = LEASE_DURATION + MAX_STANDBY_WAIT + SLACK
            while not standby.elector.is_leader:
                assert time.monotonic() - crashed_at < bound, "the standby never took over"
                spec = await read_lease(kube_cluster, kube_namespace)
                if spec["holderIdentity"] == leader.identity:
                    last_renewal = max(last_renewal, renewed(spec))
            took_over = time.monotonic() - crashed_at
            assert took_over <= bound
            spec = await read_lease(kube_cluster, kube_namespace)
            assert spec["holderIdentity"] == standby.identity
            assert spec["leaseTransitions"] == 1
            acquired = parse_time(spec["acquireTime"])
            assert acquired is not None
            # Not before the crashed leader's claim ran out: renewTime + leaseDurationSeconds < now.
            assert acquired > last_renewal + timedelta(seconds=LEASE_DURATION)
            assert standby.history == [True]

    asyncio.run(scenario())


def test_release_hands_the_lease_over_within_a_retry_period(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    async def scenario() -> None:
        async with candidates(kube_cluster, kube_namespace, 2) as group:
            leader, (standby,) = await one_leader(group)
            await leader.elector.release()
            released_at = time.monotonic()
            assert not leader.elector.is_leader
            assert leader.history == [True, False]
            free = await read_lease(kube_cluster, kube_namespace)
            assert free.get("holderIdentity") in (None, "", standby.identity)
            # Well inside the lease duration: expiry alone could not explain the takeover.
            bound = MAX_STANDBY_WAIT + SLACK / 2
            assert bound < LEASE_DURATION - RETRY
            took_over = await until(lambda: standby.elector.is_leader, bound, "the standby to take over")
            assert took_over - released_at <= bound
            spec = await read_lease(kube_cluster, kube_namespace)
            assert spec["holderIdentity"] == standby.identity
            assert spec["leaseTransitions"] == 1
            # The released elector has stopped: it neither runs nor takes the Lease back.
            assert leader.task is not None
            await asyncio.wait_for(asyncio.shield(leader.task), RETRY + SLACK)
            await leader.elector.release()  # no longer the holder: must not free the new leader's Lease
            assert (await read_lease(kube_cluster, kube_namespace))["holderIdentity"] == standby.identity
            assert standby.elector.is_leader
            assert leader.history == [True, False]

    asyncio.run(scenario())


def test_a_leader_that_cannot_reach_the_api_steps_down_before_its_lease_expires(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    async def scenario() -> None:
        async with candidates(kube_cluster, kube_namespace, 2) as group:
            leader, (standby,) = await one_leader(group)
            # Every call of the leader now goes to a port nothing listens on.
            leader.api.configuration.host = f"https://127.0.0.1:{free_port()}"
            cut_at = time.monotonic()
            await until(
                lambda: leader.history[-1] is False, RENEW_DEADLINE + SLACK, "the leader to step down"
            )
            assert not leader.elector.is_leader
            _, lost_at, lost_wall = leader.changes[-1]
            assert lost_at - cut_at <= RENEW_DEADLINE + RETRY
            spec = await read_lease(kube_cluster, kube_namespace)
            assert spec["holderIdentity"] == leader.identity  # nobody else could have it yet
            last_renewal = renewed(spec)
            # Fencing: it stopped after trying for renew_deadline, and before anyone else may lead.
            assert lost_wall - last_renewal >= timedelta(seconds=RENEW_DEADLINE - 0.1)
            assert lost_wall < last_renewal + timedelta(seconds=LEASE_DURATION)
            await until(
                lambda: standby.elector.is_leader,
                LEASE_DURATION + MAX_STANDBY_WAIT + SLACK,
                "the standby to take over",
            )
            _, _, gained_wall = standby.changes[-1]
            assert gained_wall > lost_wall  # never two leaders at once
            assert leader.history == [True, False]
            assert standby.history == [True]

    asyncio.run(scenario())


def test_a_leader_whose_lease_is_taken_by_another_writer_steps_down_at_its_next_renewal(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    async def scenario() -> None:
        async with candidates(kube_cluster, kube_namespace, 1) as group:
            leader, _ = await one_leader(group)
            stolen = datetime.now(UTC)
            patch = {
                "spec": {
                    "holderIdentity": "thief",
                    "acquireTime": format_time(stolen),
                    "renewTime": format_time(stolen),
                    "leaseDurationSeconds": int(LEASE_DURATION),
                    "leaseTransitions": 1,
                }
            }
            # A merge patch carries no resourceVersion: it always lands, and the leader's next write,
            # made with the version it read, gets 409 Conflict.
            await asyncio.to_thread(
                kube_cluster.kubectl,
                "patch", "lease", LEASE, "-n", kube_namespace, "--type=merge", "-p", json.dumps(patch),
            )  # fmt: skip
            patched_at = time.monotonic()
            await until(lambda: leader.history[-1] is False, RETRY + SLACK, "the leader to step down")
            assert not leader.elector.is_leader
            assert (await read_lease(kube_cluster, kube_namespace))["holderIdentity"] == "thief"
            # It waits as a standby while the thief's claim is fresh...
            free_at = patched_at + LEASE_DURATION
            while time.monotonic() < free_at - 0.3:
                assert not leader.elector.is_leader
                await asyncio.sleep(0.05)
            # ...and takes the Lease back once it has expired.
            await until(lambda: leader.elector.is_leader, 0.3 + MAX_STANDBY_WAIT + SLACK, "the lease back")
            spec = await read_lease(kube_cluster, kube_namespace)
            assert spec["holderIdentity"] == leader.identity
            assert spec["leaseTransitions"] == 2
            assert leader.history == [True, False, True]

    asyncio.run(scenario())
