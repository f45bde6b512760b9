"""Asking real nsqlookupd: the producers of a topic, their union, and failures that stay values."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Iterator

import aiohttp
import pytest

from nsq_operator.lookupd import LookupdAnswer, LookupFailure, Producers, ask, lookup, query
from tests.rig.http import LocalHttpServer
from tests.rig.nsq import NsqCluster
from tests.rig.procs import free_port

GARBAGE = {
    "html": (200, b"<html><body>Welcome to nginx!</body></html>"),
    "truncated": (200, b'{"channels":[],"producers":[{"broadcast_address":"10.0'),
    "bad-gateway": (502, b"<html>502 Bad Gateway</html>"),
}


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """An HTTP server that answers /lookup the way broken proxies and half-dead hosts do."""
    with LocalHttpServer(lambda path: GARBAGE[path.split("topic=")[-1]]) as server:
        yield server.url


@pytest.mark.parametrize("nsq_cluster", [{"nsqd": 2, "lookupd": 2}], indirect=True)
def test_producers_are_the_union_over_every_lookupd(nsq_cluster: NsqCluster) -> None:
    for nsqd in nsq_cluster.nsqds:
        nsqd.create_topic("orders")
    expected = frozenset(nsqd.tcp_address for nsqd in nsq_cluster.nsqds)
    nsq_cluster.wait_for_producers("orders", sorted(expected))

    result = lookup(nsq_cluster.lookupd_http_urls, "orders")
    assert result.failures == ()
    assert result.producers == expected
    assert all(isinstance(a, Producers) and a.addresses == expected for a in result.answers)

    nsq_cluster.lookupds[1].process.stop()  # one lookupd down: the other still answers
    partial = lookup(nsq_cluster.lookupd_http_urls, "orders")
    assert partial.reachable
    assert partial.producers == expected
    assert [f.lookupd for f in partial.failures] == [nsq_cluster.lookupds[1].http_url]

    nsq_cluster.lookupds[0].process.stop()  # all down: unknown, never "no producers"
    down = lookup(nsq_cluster.lookupd_http_urls, "orders")
    assert not down.reachable
    assert down.producers is None
    assert all("ConnectionError" in f.reason and " at 0x" not in f.reason for f in down.failures)


def test_an_unknown_topic_has_no_producers_and_is_not_an_error(nsq_cluster: NsqCluster) -> None:
    answer = query(nsq_cluster.lookupd_http_urls[0], "never-created")
    assert answer == Producers(nsq_cluster.lookupd_http_urls[0], frozenset())


def test_a_stopped_nsqd_leaves_the_producers(nsq_cluster: NsqCluster) -> None:
    for nsqd in nsq_cluster.nsqds:
        nsqd.create_topic("orders")
    nsq_cluster.wait_for_producers("orders", [n.tcp_address for n in nsq_cluster.nsqds])
    nsq_cluster.nsqds[1].stop()
    nsq_cluster.wait_for_producers("orders", [nsq_cluster.nsqds[0].tcp_address])
    remaining = frozenset({nsq_cluster.nsqds[0].tcp_address})
    assert lookup(nsq_cluster.lookupd_http_urls, "orders").producers == remaining


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("html", "not JSON"),
        ("truncated", "not JSON"),
        ("bad-gateway", "HTTP 502"),
    ],
)
def test_garbage_from_a_lookupd_is_a_failure_value(garbage_server: str, kind: str, says: str) -> None:
    answer = query(garbage_server, kind)
    assert isinstance(answer, LookupFailure)
    assert says in answer.reason


def test_nothing_listening_is_a_failure_value() -> None:
    answer = query(f"http://127.0.0.1:{free_port()}", "orders", timeout=2)
    assert isinstance(answer, LookupFailure)
    assert "ConnectionError" in answer.reason


def test_garbage_next_to_a_real_lookupd_still_gives_its_producers(
    nsq_cluster: NsqCluster, garbage_server: str
) -> None:
    nsq_cluster.nsqds[0].create_topic("html")
    nsq_cluster.wait_for_producers("html", [nsq_cluster.nsqds[0].tcp_address])
    result = lookup([garbage_server, *nsq_cluster.lookupd_http_urls], "html")
    assert result.producers == frozenset({nsq_cluster.nsqds[0].tcp_address})
    assert [f.lookupd for f in result.failures] == [garbage_server]


def test_the_operator_asks_a_real_lookupd_asynchronously(nsq_cluster: NsqCluster) -> None:
    nsq_cluster.nsqds[0].create_topic("orders")
    nsq_cluster.wait_for_producers("orders", [nsq_cluster.nsqds[0].tcp_address])

    async def both() -> list[LookupdAnswer]:
        async with aiohttp.ClientSession() as session:
            url = nsq_cluster.lookupd_http_urls[0]
            return [await ask(session, url, "orders", 5.0), await ask(session, url, "no-such-topic", 5.0)]

    found, missing = asyncio.run(both())
    assert found == Producers(nsq_cluster.lookupd_http_urls[0], frozenset({nsq_cluster.nsqds[0].tcp_address}))
    assert missing == Producers(nsq_cluster.lookupd_http_urls[0], frozenset())


def test_one_deadline_covers_a_lookupd_that_trickles_its_answer() -> None:
    """Headers at once, then a byte every half second: a per-read timeout would wait forever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.is_set():
                connection.sendall(b" ")
                stop.wait(0.5)

    threading.Thread(target=trickle, daemon=True).start()

    async def one() -> tuple[LookupdAnswer, float]:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            return await ask(session, url, "orders", 1.5), time.monotonic() - started

    try:
        answer, took = asyncio.run(one())
    finally:
        stop.set()
        listener.close()
    assert isinstance(answer, LookupFailure)
    assert answer.reason == "no complete answer within 1.5 s"
    assert took < 5.0, f"the deadline was not kept: {took:.1f} s"


def test_the_lookupds_of_one_poll_are_asked_at_once() -> None:
    """Three lookupds that each answer only once all three are being asked: one at a time, none would."""
    together = threading.Barrier(3, timeout=5)

    def answer(path: str) -> tuple[int, bytes]:
        try:
            together.wait()
        except threading.BrokenBarrierError:
            return 503, b"<html>asked alone</html>"
        return 200, b'{"channels": [], "producers": []}'

    with LocalHttpServer(answer) as server:
        urls = [f"{server.url}/{name}" for name in ("a", "b", "c")]
        result = lookup(urls, "orders")
    assert result.failures == ()
    assert [answer.lookupd for answer in result.answers] == urls
    assert result.producers == frozenset()


def test_credentials_in_a_lookupd_url_are_sent_as_written_and_never_in_a_failure() -> None:
    """Both ways of asking send the URL's user:password as basic auth; what comes back shows none."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests_seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                requests_seen.append(connection.recv(65536))
                body = b'{"channels": [], "producers": []}'
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
                )
                connection.sendall(body)

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    secret = f"http://ops:PLANTED-SECRET@127.0.0.1:{port}"
    basic = b"Authorization: Basic " + base64.b64encode(b"ops:PLANTED-SECRET")

    async def asked() -> list[LookupdAnswer]:
        async with aiohttp.ClientSession() as session:
            return [
                await ask(session, secret, "orders", 5.0),
                await ask(session, "http://ops:PLANTED-SECRET@127.0.0.1:notaport", "orders", 5.0),
                await ask(session, f"http://ops:PLANTED-SECRET@127.0.0.1:{free_port()}", "orders", 5.0),
            ]

    try:
        answers = [
            *asyncio.run(asked()),
            query(secret, "orders"),
            query("http://ops:PLANTED-SECRET@", "orders"),
        ]
    finally:
        listener.close()
    assert answers[0] == Producers(secret, frozenset())
    assert answers[3] == Producers(secret, frozenset())
    assert len(requests_seen) == 2
    assert all(basic in request for request in requests_seen)
    failures = answers[1:3] + answers[4:]
    assert [type(f).__name__ for f in failures] == ["LookupFailure"] * 3
    reasons = [f.reason for f in failures if isinstance(f, LookupFailure)]
    assert reasons[0] == "InvalidUrlClientError: http://***@127.0.0.1:notaport/lookup"  # aiohttp quotes it
    assert reasons[2].startswith("InvalidURL: Invalid URL 'http://***@/lookup")  # and so does requests
    assert all("PLANTED" not in reason for reason in reasons)
