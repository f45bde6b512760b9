"""Fuzzing the nsqlookupd response parser: whatever a lookupd (or whatever answers in its place) sends,
`parse_lookup` returns a value - the producers, or a failure saying why - and never raises.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nsq_operator.lookupd import LookupFailure, Producers, nsqd_address, parse_lookup

LOOKUPD = "http://lookupd:4161"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The longest reason that still reads as one clear sentence in a condition and an event.
MAX_REASON = 1024

statuses = st.integers(min_value=100, max_value=599)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
hosts = st.one_of(
    st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}\Z"),
    st.ip_addresses().map(str),
)
ports = st.integers(min_value=1, max_value=65535)
producer_lists = st.lists(
    st.fixed_dictionaries(
        {"broadcast_address": hosts, "tcp_port": ports},
        optional={"hostname": st.text(max_size=10), "http_port": ports, "version": st.just("1.3.0"),
                  "remote_address": st.text(max_size=20)},
    ),
    max_size=8,
)  # fmt: skip


def is_value(answer: object) -> bool:
    """A Producers, or a LookupFailure with a non-empty reason (how long it may be: see the last test)."""
    if isinstance(answer, Producers):
        return answer.lookupd == LOOKUPD
    return (
        isinstance(answer, LookupFailure)
        and answer.lookupd == LOOKUPD
        and isinstance(answer.reason, str)
        and len(answer.reason) > 0
    )


@FUZZ
@given(status=statuses, body=st.binary(max_size=400))
def test_any_bytes_give_a_value(status: int, body: bytes) -> None:
    assert is_value(parse_lookup(LOOKUPD, status, body))


@FUZZ
@given(status=statuses, body=st.text(max_size=400))
def test_any_text_gives_a_value(status: int, body: str) -> None:
    assert is_value(parse_lookup(LOOKUPD, status, body))


@FUZZ
@given(status=statuses, document=json_values)
def test_any_json_document_gives_a_value(status: int, document: Any) -> None:
    assert is_value(parse_lookup(LOOKUPD, status, json.dumps(document).encode()))


@FUZZ
@given(status=statuses, document=st.dictionaries(
    st.sampled_from(["producers", "channels", "message", "status_code", "status_txt", "data"]),
    json_values | st.lists(st.dictionaries(st.sampled_from(["broadcast_address", "tcp_port"]), json_values)),
))  # fmt: skip
def test_documents_shaped_almost_like_lookupds_give_a_value(status: int, document: dict[str, Any]) -> None:
    assert is_value(parse_lookup(LOOKUPD, status, json.dumps(document)))


@FUZZ
@given(producers=producer_lists, wrapped=st.booleans())
def test_a_well_formed_answer_gives_exactly_its_producers(
    producers: list[dict[str, Any]], wrapped: bool
) -> None:
    body: dict[str, Any] = {"channels": ["c"], "producers": producers}
    if wrapped:  # nsqlookupd < 1.0, or asked without the Accept header
        body = {"status_code": 200, "status_txt": "OK", "data": body}
    answer = parse_lookup(LOOKUPD, 200, json.dumps(body))
    expected = {nsqd_address(p["broadcast_address"], p["tcp_port"]) for p in producers}
    assert answer == Producers(LOOKUPD, frozenset(expected))
    # Every address splits back into its host and port, IPv6 included.
    for address in expected:
        host, _, port = address.rpartition(":")
        assert int(port) in {p["tcp_port"] for p in producers}
        assert host.strip("[]") in {p["broadcast_address"] for p in producers}


@FUZZ
@given(producers=producer_lists.filter(bool), index=st.integers(min_value=0),
       bad=st.sampled_from([
           {"broadcast_address": "", "tcp_port": 4150}, {"broadcast_address": "h", "tcp_port": 0},
           {"broadcast_address": "h", "tcp_port": 65536}, {"broadcast_address": "h", "tcp_port": True},
           {"broadcast_address": "h", "tcp_port": "4150"}, {"broadcast_address": 7, "tcp_port": 4150},
           {"tcp_port": 4150}, "h:4150", None, [],
       ]))  # fmt: skip
def test_one_malformed_producer_fails_the_whole_answer(producers: list[Any], index: int, bad: Any) -> None:
    producers.insert(index % (len(producers) + 1), bad)
    answer = parse_lookup(LOOKUPD, 200, json.dumps({"producers": producers}))
    assert isinstance(answer, LookupFailure)
    assert "malformed producer entry" in answer.reason


@FUZZ
@given(wrapped=st.booleans(), body=st.binary(max_size=40))
def test_topic_not_found_means_no_producers_and_other_statuses_fail(wrapped: bool, body: bytes) -> None:
    document = (
        {"status_code": 404, "status_txt": "TOPIC_NOT_FOUND", "data": None}
        if wrapped
        else {"message": "TOPIC_NOT_FOUND"}
    )
    assert parse_lookup(LOOKUPD, 404, json.dumps(document)) == Producers(LOOKUPD, frozenset())
    answer = parse_lookup(LOOKUPD, 500, body)
    assert isinstance(answer, LookupFailure)
    assert "HTTP 500" in answer.reason


def test_deeply_nested_json_is_a_failure_not_an_exception() -> None:
    # json.loads raises RecursionError (not a ValueError) past the interpreter's recursion limit.
    answer = parse_lookup(LOOKUPD, 200, b"[" * 100_000 + b"]" * 100_000)
    assert isinstance(answer, LookupFailure)


@FUZZ
@given(status=statuses, document=json_values)
@example(status=404, document={"message": "<html>" + "x" * 2_000_000 + "</html>"})
@example(status=200, document={"producers": ["x" * 2_000_000]})
@example(status=502, document={"status_code": 502, "status_txt": ["x"] * 10_000})
def test_the_reason_stays_short(status: int, document: Any) -> None:
    # The reason becomes a condition's message and an event's: a proxy's 2 MB error page must not.
    answer = parse_lookup(LOOKUPD, status, json.dumps(document))
    assert not isinstance(answer, LookupFailure) or len(answer.reason) <= MAX_REASON, len(answer.reason)
