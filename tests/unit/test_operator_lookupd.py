"""Reading nsqlookupd's answers: producers, no producers, and every kind of garbage as a value."""

from __future__ import annotations

import json

import pytest

from nsq_operator.lookupd import Lookup, LookupFailure, Producers, parse_lookup

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
