"""Reading nsqlookupd's answers: producers, no producers, and every kind of garbage as a value."""

from __future__ import annotations

import io
import json
import logging
import time

import aiohttp
import pytest
import requests
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from nsq_operator.lookupd import (
    MAX_REASON_LENGTH,
    Lookup,
    LookupFailure,
    Producers,
    RedactingFilter,
    describe_error,
    parse_lookup,
    redact,
    redact_logs,
)

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


@pytest.mark.parametrize(
    ("shown", "redacted"),
    [
        ("http://user:pass@lookupd:4161", "http://***@lookupd:4161"),
        ("https://user@lookupd:4161/base", "https://***@lookupd:4161/base"),  # a user name alone too
        ("http://u:p%40ss@lookupd:4161", "http://***@lookupd:4161"),
        ("http://u:p@ss@lookupd:4161", "http://***@lookupd:4161"),  # an unescaped @ in the password
        ("http://:@lookupd", "http://***@lookupd"),
        ("http://lookupd:4161", "http://lookupd:4161"),
        ("http://lookupd:4161/by@path", "http://lookupd:4161/by@path"),  # an @ past the host is no userinfo
        ("http://***@lookupd:4161", "http://***@lookupd:4161"),  # idempotent
        ("mail me at ops@example.com", "mail me at ops@example.com"),
        (
            "2 of 3 answered; http://a:one@l1:4161: down; https://b:two@l2:4161: HTTP 502",
            "2 of 3 answered; http://***@l1:4161: down; https://***@l2:4161: HTTP 502",
        ),
        ("url='http://a:b@h:1/lookup?topic=t'", "url='http://***@h:1/lookup?topic=t'"),
    ],
)
def test_redact_replaces_the_whole_userinfo_of_every_url(shown: str, redacted: str) -> None:
    assert redact(shown) == redacted
    assert redact(redacted) == redacted


def _request_info(url: str) -> aiohttp.RequestInfo:
    headers = CIMultiDictProxy(CIMultiDict[str]())
    return aiohttp.RequestInfo(yarl.URL(url), "GET", headers, yarl.URL(url))


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ClientResponseError(
            _request_info("http://u:PLANTED@h:1/lookup?topic=t"), (), status=502, message="Bad Gateway"
        ),
        aiohttp.InvalidURL(yarl.URL("http://u:PLANTED@h:1/lookup")),
        aiohttp.InvalidUrlClientError("http://u:PLANTED@h:port/lookup"),
        requests.exceptions.InvalidURL("Invalid URL 'http://u:PLANTED@': No host supplied"),
        ValueError("http://u:PLANTED@h:1 and https://v:PLANTED@h:2 both failed"),
    ],
    ids=["response-error", "invalid-url", "invalid-url-client-error", "requests-invalid-url", "two-urls"],
)
def test_describe_error_strips_the_credentials_of_any_url_it_quotes(error: Exception) -> None:
    assert "PLANTED" in str(error)  # the error itself does quote them
    described = describe_error(error)
    assert "PLANTED" not in described
    assert "://***@" in described
    assert described.startswith(type(error).__name__ + ": ")


def test_a_failure_reason_is_redacted_before_it_is_cut_to_length() -> None:
    """Cut first, and a URL cut before its @ would keep part of the password."""
    reason = "x" * (MAX_REASON_LENGTH - 20) + " http://user:" + "PLANTED" * 20 + "@h:1"
    failure = LookupFailure("http://user:PLANTED@h:1", reason)
    assert "PLANTED" not in failure.reason
    assert failure.reason.endswith("http://***@h:1")
    assert failure.lookupd == "http://user:PLANTED@h:1"  # kept as written: it is what gets asked


def test_the_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test-redacting-filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        redact_logs(logger)
        redact_logs(logger)  # once is enough: a second call adds nothing
        assert len(handler.filters) == 1
        logger.warning("asking %s", "http://u:PLANTED-1@h:1")
        try:
            raise aiohttp.InvalidURL(yarl.URL("http://u:PLANTED-2@h:1/lookup"))
        except aiohttp.InvalidURL:
            logger.exception("lookup of %s failed", "http://u:PLANTED-3@h:1")
        logger.warning("nothing secret at %s", "http://h:1")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "PLANTED" not in text
    assert "asking http://***@h:1\n" in text
    assert "lookup of http://***@h:1 failed\nTraceback" in text  # the traceback is kept, redacted
    assert "InvalidURL: http://***@h:1/lookup" in text
    assert "nothing secret at http://h:1" in text


def test_redact_is_linear_on_long_lines() -> None:
    """It runs on every log line (kopf's debug lines hold whole objects): no quadratic backtracking."""
    started = time.perf_counter()
    for text in ("a.b" * 300_000 + "@", "x://" + "a" * 1_000_000 + "@", "://" * 300_000 + "@"):
        redact(text)
    assert time.perf_counter() - started < 1.0


def test_the_log_filter_leaves_a_badly_formatted_record_to_its_handler() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s and %s", ("only one",), None)
    assert RedactingFilter().filter(record)
