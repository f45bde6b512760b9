"""Reading nsqlookupd's answers: producers, no producers, and every kind of garbage as a value."""

from __future__ import annotations

import json
import threading
import time

import pytest

from nsq_operator.lookupd import Lookup, LookupCache, LookupdAnswer, LookupFailure, Producers, parse_lookup

URL = "http://lookupd:4161"


def producer(host: str, port: int) -> dict[str, object]:
    return {
        "remote_address": f"{host}:55555",
        "hostname": "h",
        "broadcast_address": host,
        "tcp_port": port,
        "http_port": port + 1,
        "version": "1.3.0",
    }


def test_valid_answer_lists_broadcast_address_and_tcp_port() -> None:
    producers = [producer("10.0.0.1", 4150), producer("10.0.0.2", 4150)]
    body = json.dumps({"channels": ["c"], "producers": producers})
    assert parse_lookup(URL, 200, body) == Producers(URL, frozenset({"10.0.0.1:4150", "10.0.0.2:4150"}))


def test_legacy_wrapped_answer_is_understood() -> None:
    body = json.dumps(
        {
            "status_code": 200,
            "status_txt": "OK",
            "data": {"channels": [], "producers": [producer("nsqd-0", 4150)]},
        }
    )
    assert parse_lookup(URL, 200, body) == Producers(URL, frozenset({"nsqd-0:4150"}))


def test_ipv6_addresses_are_bracketed() -> None:
    body = json.dumps({"producers": [producer("fd00::1", 4150)]})
    assert parse_lookup(URL, 200, body) == Producers(URL, frozenset({"[fd00::1]:4150"}))


def test_topic_not_found_means_no_producers() -> None:
    assert parse_lookup(URL, 404, b'{"message":"TOPIC_NOT_FOUND"}') == Producers(URL, frozenset())
    legacy = b'{"status_code":404,"status_txt":"TOPIC_NOT_FOUND","data":null}'
    assert parse_lookup(URL, 200, legacy) == Producers(URL, frozenset())


def test_empty_producer_list_is_no_producers() -> None:
    assert parse_lookup(URL, 200, b'{"channels":[],"producers":[]}') == Producers(URL, frozenset())


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (200, b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
        (502, b"<html>Bad Gateway</html>", "HTTP 502"),
        (200, b'{"channels":[],"producers":[{"broadcast_addr', "not JSON"),
        (200, b"", "not JSON"),
        (200, b"\xff\xfe", "not JSON"),
        (200, b"[]", "expected a JSON object"),
        (200, b'{"channels":[]}', "without a producers list"),
        (200, b'{"producers":{"a":1}}', "without a producers list"),
        (200, b'{"producers":[{"broadcast_address":"a"}]}', "malformed producer"),
        (200, b'{"producers":[{"broadcast_address":"a","tcp_port":"4150"}]}', "malformed producer"),
        (200, b'{"producers":[{"broadcast_address":"a","tcp_port":0}]}', "malformed producer"),
        (200, b'{"producers":["a:4150"]}', "malformed producer"),
        (404, b'{"message":"NOT_FOUND"}', "HTTP 404"),
        (500, b'{"message":"INTERNAL_ERROR"}', "HTTP 500: INTERNAL_ERROR"),
        (400, b'{"message":"MISSING_ARG_TOPIC"}', "MISSING_ARG_TOPIC"),
    ],
)
def test_garbage_is_a_failure_value(status: int, body: bytes, says: str) -> None:
    answer = parse_lookup(URL, status, body)
    assert isinstance(answer, LookupFailure)
    assert answer.lookupd == URL
    assert says in answer.reason


def test_union_over_the_lookupds_that_answered() -> None:
    lookup = Lookup(
        (
            Producers("a", frozenset({"x:1", "y:1"})),
            LookupFailure("b", "down"),
            Producers("c", frozenset({"y:1", "z:1"})),
        )
    )
    assert lookup.reachable
    assert lookup.producers == frozenset({"x:1", "y:1", "z:1"})
    assert lookup.failures == (LookupFailure("b", "down"),)


def test_no_answers_means_unknown_producers_not_none_of_them() -> None:
    lookup = Lookup((LookupFailure("a", "down"), LookupFailure("b", "down")))
    assert not lookup.reachable
    assert lookup.producers is None
    assert Lookup((Producers("a", frozenset()),)).producers == frozenset()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cache_shares_an_answer_within_its_ttl() -> None:
    calls: list[tuple[str, str]] = []
    clock = FakeClock()

    def fetch(lookupd: str, topic: str) -> LookupdAnswer:
        calls.append((lookupd, topic))
        return Producers(lookupd, frozenset({f"{topic}:1"}))

    cache = LookupCache(ttl=2.0, fetch=fetch, clock=clock)
    assert cache.get("a", "t") == cache.get("a", "t")
    cache.get("a", "other")
    cache.get("b", "t")
    assert calls == [("a", "t"), ("a", "other"), ("b", "t")]
    clock.now += 2.0
    cache.get("a", "t")
    assert calls[-1] == ("a", "t")
    assert len(calls) == 4
    cache.get("a", "t", max_age=0)  # a consumer polling faster than the TTL never gets a stale answer
    assert len(calls) == 5


def test_cache_keeps_failures_too_so_a_dead_lookupd_is_asked_once_per_poll() -> None:
    calls = []

    def fetch(lookupd: str, topic: str) -> LookupdAnswer:
        calls.append(lookupd)
        return LookupFailure(lookupd, "down")

    cache = LookupCache(ttl=5.0, fetch=fetch, clock=FakeClock())
    for _ in range(3):
        assert isinstance(cache.get("a", "t"), LookupFailure)
    assert calls == ["a"]


def test_concurrent_misses_fetch_once() -> None:
    calls = []
    gate = threading.Event()

    def fetch(lookupd: str, topic: str) -> LookupdAnswer:
        calls.append(lookupd)
        gate.wait(5)
        return Producers(lookupd, frozenset())

    cache = LookupCache(ttl=10.0, fetch=fetch)
    threads = [threading.Thread(target=cache.get, args=("a", "t")) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert calls == ["a"]
