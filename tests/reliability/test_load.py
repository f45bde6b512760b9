"""Load: many NsqConsumers and many worker Deployments while producers come and go.

Producers are registered with a real nsqlookupd over its TCP protocol (IDENTIFY + REGISTER, as nsqd
does; support.FakeProducer): the real lookupd does the real work and the operator cannot tell the
difference, while a hundred nsqd processes would cost the machine more than the operator under test.
The operator runs on a control plane of the test's own, with kwok nodes enough for every pod.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from typing import Any

import pytest

from tests.integration.operators import Namespace, consumer
from tests.reliability.support import (
    Api,
    FakeProducer,
    Row,
    RssSampler,
    Sizes,
    address_of,
    close_all,
    sizes,
)
from tests.rig.kube import FAKE_NODES, fake_node
from tests.rig.nsq import NsqCluster
from tests.rig.waiting import wait_for

PODS_PER_NODE = 250  # tests.rig.kube.fake_node's capacity
SMALL_WORKERS = {"resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                               "limits": {"cpu": "10m", "memory": "16Mi"}}}  # fmt: skip
CONSUMER_LABEL = "nsqoperator.dev/consumer"


@pytest.mark.kube
@pytest.mark.timeout(int(sizes().load_seconds) + 900)  # the soak holds the load for ten minutes
@pytest.mark.parametrize("nsq_cluster", [{"nsqd": 0}], indirect=True)
def test_many_consumers_and_deployments_with_producers_coming_and_going(
    private_ns: Namespace, nsq_cluster: NsqCluster, scale: Sizes, row: Row, request: pytest.FixtureRequest
) -> None:
    ns = private_ns
    api = Api(ns.kube)
    consumers, per, seconds = scale.load_consumers, scale.load_producers, scale.load_seconds
    poll = scale.load_poll_seconds
    total = consumers * per
    min_life = max(5.0, 3.0 * poll)  # a producer lives at least this long, so its worker must be seen
    sample_every = max(2.0, float(poll))
    row.order, row.section = 3.1, "Load"
    row.scenario = "Many NsqConsumers and Deployments, producers coming and going"
    row.load = (f"{consumers} NsqConsumers x {per} producers = {total:,} Deployments (and pods), polled "
                f"every {poll} s, held for {seconds:g} s; producers registered with a real nsqlookupd "
                "over its TCP protocol")  # fmt: skip
    row.fault = f"every {scale.load_churn_every:g} s one producer leaves and a new one joins (grace 2 s)"
    for index in range(len(FAKE_NODES), math.ceil(total * 1.2 / PODS_PER_NODE) + 1):
        ns.kube.apply(fake_node(f"kwok-node-{index}"))

    lookupd = nsq_cluster.lookupds[0]
    ports = itertools.count(20_000)
    names = [f"load-{c}" for c in range(consumers)]
    producers: dict[str, dict[str, FakeProducer]] = {name: {} for name in names}
    born: dict[str, float] = {}
    request.addfinalizer(lambda: close_all(p for group in producers.values() for p in group.values()))
    joins: list[tuple[str, str, float]] = []
    leaves: list[tuple[str, str, float]] = []

    def join(name: str) -> None:
        producer = FakeProducer(lookupd.tcp_address, name, next(ports))
        producers[name][producer.address] = producer
        born[producer.address] = time.monotonic()
        joins.append((name, producer.address, born[producer.address]))

    def expected() -> dict[str, set[str]]:
        return {name: set(group) for name, group in producers.items()}

    def observed() -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {name: set() for name in names}
        for item in api.deployments(ns.name):
            seen[item["metadata"]["labels"][CONSUMER_LABEL]].add(address_of(item))
        return seen

    for name in names:
        for _ in range(per):
            join(name)
    joins.clear()  # the initial set is not churn
    operator = ns.start_operator()
    rss = RssSampler(operator, interval=max(1.0, seconds / 120))
    rss.start()
    started = time.monotonic()
    for name in names:
        body = consumer([lookupd.http_url], name=name, topic=name, nsqdRemovalGraceSeconds=2,
                        worker=SMALL_WORKERS)  # fmt: skip
        body["spec"]["lookupd"]["pollIntervalSeconds"] = poll
        ns.apply(body)
    wait_for(lambda: observed() == expected(), 120 + total / 10, "a Deployment per producer", interval=1)
    converged = time.monotonic() - started
    row.see(f"{total:,} Deployments made in {converged:.0f} s")

    # Churn, sampling what exists as it goes.
    samples: list[tuple[float, dict[str, set[str]]]] = []
    rng = random.Random(8)
    churn_start = time.monotonic()
    next_sample = next_ping = churn_start
    while (now := time.monotonic()) - churn_start < seconds:
        name = rng.choice(names)
        old = [a for a in producers[name] if now - born[a] >= min_life]
        if old:
            address = rng.choice(old)
            producers[name].pop(address).close()
            leaves.append((name, address, now))
        join(name)
        if now >= next_sample:
            samples.append((time.monotonic(), observed()))
            next_sample = now + sample_every
        if now >= next_ping:  # nsqd pings lookupd every 15 s; without it a producer goes inactive
            for group in producers.values():
                for producer in group.values():
                    producer.ping()
            next_ping = now + 15
        time.sleep(max(0.0, scale.load_churn_every - (time.monotonic() - now)))
    churned = time.monotonic()
    wait_for(lambda: observed() == expected(), 60 + poll * 3, "the Deployments to match the producers",
               interval=1, describe=lambda: {n: (observed()[n] ^ expected()[n]) for n in names})  # fmt: skip
    settled = time.monotonic() - churned
    samples.append((time.monotonic(), observed()))
    memory = rss.stop()

    # No missed change: every producer that joined got its worker (each lived >= min_life), and every
    # one that left lost it; how long each took, from the samples.
    def first_time(name: str, address: str, after: float, present: bool) -> float | None:
        for when, seen in samples:
            if when >= after and (address in seen[name]) == present:
                return when - after
        return None

    join_delays = [first_time(n, a, t, True) for n, a, t in joins]
    leave_delays = [first_time(n, a, t, False) for n, a, t in leaves]
    missed_joins = sum(d is None for d in join_delays)
    missed_leaves = sum(d is None for d in leave_delays)
    seen_join = [d for d in join_delays if d is not None]
    seen_leave = [d for d in leave_delays if d is not None]
    want_counts = {name: len(group) for name, group in producers.items()}

    def counts() -> dict[str, Any]:
        return {name: ns.status(name).get("nsqdCount") for name in names}

    kib = [k for _, k in memory]
    third = max(1, len(kib) // 3)
    early, late = statistics.median(kib[:third]), statistics.median(kib[-third:])
    row.see(
        f"{len(joins)} joins and {len(leaves)} leaves; missed: {missed_joins} joins, {missed_leaves} "
        f"leaves; a joining producer's Deployment seen after median "
        f"{statistics.median(seen_join):.1f} s, "
        f"max {max(seen_join):.1f} s (sampled every {sample_every:g} s); a leaving one's gone after "
        f"median {statistics.median(seen_leave):.1f} s, max {max(seen_leave):.1f} s (grace 2 s)"
    )
    row.see(
        f"the Deployments matched the producers {settled:.0f} s after the churn stopped, and every "
        "NsqConsumer's status.nsqdCount its number of producers"
    )
    row.see(
        f"operator RSS (VmRSS, {len(kib)} samples): {kib[0] / 1024:.0f} MiB at start, median "
        f"{early / 1024:.1f} MiB over the first third, {late / 1024:.1f} MiB over the last third, "
        f"max {max(kib) / 1024:.1f} MiB"
    )
    assert missed_joins == 0
    assert missed_leaves == 0
    wait_for(lambda: counts() == want_counts, 30, "every status.nsqdCount right", interval=1, describe=counts)
    assert operator.alive()
    # No leak: the last third's median stays within 10% (and 16 MiB) of the first third's.
    assert late - early <= max(16 * 1024, 0.10 * early), f"RSS grew from {early} KiB to {late} KiB"
