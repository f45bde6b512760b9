"""The operator's scheduler against the real control plane: no finalizer, shared polls, deadlines.

Lookupds that misbehave are loopback servers of the test's own; the healthy ones are the rig's
real nsqlookupd. Pods run on kwok's fake nodes; what matters here is what the operator writes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.operators import TOPIC, Namespace, consumer, topic_everywhere
from tests.rig.http import LocalHttpServer
from tests.rig.nsq import NsqCluster

pytestmark = pytest.mark.kube

OLD_FINALIZER = "nsqoperator.dev/finalizer"


def producers_answer(addresses: list[str]) -> bytes:
    entries = ",".join(
        f'{{"broadcast_address":"{a.split(":")[0]}","tcp_port":{a.split(":")[1]},"hostname":"h"}}'
        for a in addresses
    )
    return f'{{"channels":[],"producers":[{entries}]}}'.encode()


class CountingLookupd:
    """A loopback lookupd that lists `addresses`, counts the requests, and may hold each one."""

    def __init__(self, addresses: list[str], delay: float = 0.0) -> None:
        self.addresses = addresses
        self.delay = delay
        self.requests: Counter[str] = Counter()
        self.answered = threading.Event()
        self.server = LocalHttpServer(self._answer)

    def _answer(self, path: str) -> tuple[int, bytes]:
        self.requests[path.split("topic=")[-1]] += 1
        if self.delay:
            time.sleep(self.delay)
        self.answered.set()
        return 200, producers_answer(self.addresses)

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def trickling_lookupd() -> Iterator[str]:
    """A lookupd that sends its headers at once, then one byte every 3 s, to everyone who asks."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    stop = threading.Event()

    def serve(connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not stop.wait(3.0):
                    connection.sendall(b" ")
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


def test_no_finalizer_so_deletion_needs_no_operator(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    assert ns.consumer()["metadata"].get("finalizers") in (None, [])

    for process in ns.operators:
        process.stop()
    ns.kubectl("delete", "nsqconsumer", "orders", "--timeout=20s")  # completes with no operator running
    ns.wait(lambda: ns.deployments() == {}, "garbage collection of the Deployments", timeout=60)


def test_the_finalizer_of_older_versions_is_removed(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    topic_everywhere(nsq_cluster)
    old = consumer(nsq_cluster.lookupd_http_urls)
    old["metadata"]["finalizers"] = [OLD_FINALIZER]
    ns.apply(old)
    ns.wait(lambda: not ns.consumer()["metadata"].get("finalizers"), "the old finalizer removed")
    ns.kubectl("delete", "nsqconsumer", "orders", "--timeout=20s")


def test_nothing_is_created_for_a_consumer_deleted_while_its_poll_is_in_flight(
    ns: Namespace, tmp_path: Path
) -> None:
    slow = CountingLookupd(["10.9.0.1:4150"], delay=3.0)
    try:
        ns.apply(consumer([slow.url], name="doomed"))
        ns.wait(lambda: slow.requests[TOPIC] >= 1, "the lookup in flight", timeout=15)
        ns.kubectl("delete", "nsqconsumer", "doomed", "--timeout=10s")
        ns.wait(slow.answered.is_set, "the lookup answered after the deletion", timeout=15)
        time.sleep(3)  # a reconcile that would wrongly act on the answer has had time to
        assert ns.deployments("doomed") == {}
    finally:
        slow.server.close()


def test_consumers_of_one_topic_share_one_lookup_per_interval(ns: Namespace) -> None:
    lookupd = CountingLookupd([f"10.9.1.{i}:4150" for i in range(3)])
    try:
        for index in range(20):
            body = consumer([lookupd.url], name=f"c{index}")
            body["spec"]["lookupd"]["pollIntervalSeconds"] = 2
            ns.apply(body)
        ns.wait(
            lambda: all(len(ns.deployments(f"c{i}")) == 3 for i in range(20)),
            "three Deployments for each of the twenty consumers",
            timeout=60,
        )
        before = lookupd.requests[TOPIC]
        time.sleep(10.0)
        asked = lookupd.requests[TOPIC] - before
    finally:
        lookupd.server.close()
    # Ten seconds at a 2 s interval is five polls of the one (lookupd, topic); twenty consumers
    # polling on their own would have asked about a hundred times.
    assert 3 <= asked <= 7, f"{asked} requests in 10 s"


def test_slow_lookupds_do_not_starve_a_healthy_consumer(
    ns: Namespace, nsq_cluster: NsqCluster, trickling_lookupd: str
) -> None:
    for index in range(10):
        ns.apply(consumer([trickling_lookupd], name=f"stuck{index}"))
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "the healthy consumer's Deployments")

    third = nsq_cluster.add_nsqd()
    third.create_topic(TOPIC)
    nsq_cluster.wait_for_producers(TOPIC, [*addresses, third.tcp_address])
    listed = time.monotonic()
    ns.wait(lambda: third.tcp_address in ns.deployments(), "the new nsqd's Deployment", timeout=30)
    took = time.monotonic() - listed
    # Its poll interval is 1 s; the bound is that plus a second (and kubectl's own time).
    assert took <= 3.0, f"the new nsqd waited {took:.1f} s for its Deployment"
    condition = ns.condition("LookupdReachable", "stuck0")
    assert condition.get("status") == "False"
    assert "no complete answer within" in condition.get("message", "")


def test_the_operator_reports_its_own_metrics(ns: Namespace, nsq_cluster: NsqCluster) -> None:
    addresses = topic_everywhere(nsq_cluster)
    ns.apply(consumer(nsq_cluster.lookupd_http_urls))
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    ns.wait_condition("Ready", "True")
    operator = ns.operators[0]
    series = f'{{consumer="orders",namespace="{ns.name}"}}'
    ns.wait(lambda: operator.metrics().get(f"nsq_operator_ready_workers{series}") == 2, "two ready workers")
    found = operator.metrics()
    assert found[f"nsq_operator_deployments{series}"] == 2
    assert found["nsq_operator_leader"] == 1
    lookupd = nsq_cluster.lookupd_http_urls[0]
    assert found[f'nsq_operator_lookupd_polls_total{{lookupd="{lookupd}",result="ok"}}'] >= 1
    assert found[f'nsq_operator_lookupd_poll_seconds_count{{lookupd="{lookupd}"}}'] >= 1
    assert found['nsq_operator_api_requests_total{verb="create"}'] >= 2
    assert found['nsq_operator_reconciles_total{result="ok"}'] >= 1
