"""Reading nsqd's /stats: `parse_stats` and `channel_stats` against the shapes real nsqd answers with.

The JSON below was taken from nsqd v1.3.0 (`/stats?format=json&topic=t&include_clients=false`), apart
from the 0.x answer, which wraps the same object in `{"status_code", "status_txt", "data"}`.
Failures are values (`Unreadable`, with a sentence), never exceptions.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsq_operator.autoscale import ChannelStats, Unreadable
from nsq_operator.nsqd_stats import TopicStats, channel_stats, parse_stats

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LATENCY = {"count": 0, "percentiles": None}


def channel(name: str, **numbers: Any) -> dict[str, Any]:
    """One channel entry exactly as nsqd 1.3 writes it (clients left out)."""
    entry = {
        "channel_name": name,
        "depth": 0,
        "backend_depth": 0,
        "in_flight_count": 0,
        "deferred_count": 0,
        "message_count": 0,
        "requeue_count": 0,
        "timeout_count": 0,
        "client_count": 0,
        "clients": None,
        "paused": False,
        "e2e_processing_latency": LATENCY,
    }
    return entry | numbers


def topic(name: str, channels: list[dict[str, Any]] | None, **numbers: Any) -> dict[str, Any]:
    entry = {
        "topic_name": name,
        "channels": channels,
        "depth": 0,
        "backend_depth": 0,
        "message_count": 1,
        "message_bytes": 2,
        "paused": False,
        "e2e_processing_latency": LATENCY,
    }
    return entry | numbers


def answer(topics: list[Any] | None) -> str:
    memory = {"heap_objects": 2842, "heap_idle_bytes": 6520832, "next_gc_bytes": 4194304, "gc_total_runs": 0}
    return json.dumps(
        {
            "version": "1.3.0",
            "health": "OK",
            "start_time": 1796190227,
            "topics": topics,
            "memory": memory,
            "producers": None,
        }
    )


# Verbatim from nsqd v1.3.0.
ONE_CHANNEL = (
    '{"version":"1.3.0","health":"OK","start_time":1796190227,"topics":[{"topic_name":"t","channels":'
    '[{"channel_name":"c","depth":1,"backend_depth":0,"in_flight_count":0,"deferred_count":0,'
    '"message_count":1,"requeue_count":0,"timeout_count":0,"client_count":0,"clients":null,"paused":false,'
    '"e2e_processing_latency":{"count":0,"percentiles":null}}],"depth":0,"backend_depth":0,"message_count":1,'
    '"message_bytes":2,"paused":false,"e2e_processing_latency":{"count":0,"percentiles":null}}],'
    '"memory":{"heap_objects":2842,"heap_idle_bytes":6520832,"heap_in_use_bytes":1376256,'
    '"heap_released_bytes":6422528,"gc_pause_usec_100":0,"gc_pause_usec_99":0,"gc_pause_usec_95":0,'
    '"next_gc_bytes":4194304,"gc_total_runs":0},"producers":null}'
)
NO_SUCH_TOPIC = '{"version":"1.3.0","health":"OK","start_time":1796190840,"topics":null,"producers":null}'
# A topic with no channel yet keeps its messages in the topic's own depth.
TOPIC_WITHOUT_CHANNELS = (
    '{"version":"1.3.0","health":"OK","start_time":1796190840,"topics":[{"topic_name":"t","channels":[],'
    '"depth":1,"backend_depth":0,"message_count":1,"message_bytes":1,"paused":false,'
    '"e2e_processing_latency":{"count":0,"percentiles":null}}],"producers":null}'
)
# A consumer holding two messages (one of them was requeued with a delay, so a third went out).
BUSY = (
    '{"version":"1.3.0","health":"OK","start_time":1796190840,"topics":[{"topic_name":"t","channels":['
    '{"channel_name":"c","depth":2,"backend_depth":0,"in_flight_count":2,"deferred_count":1,'
    '"message_count":5,"requeue_count":1,"timeout_count":0,"client_count":1,"clients":null,"paused":false,'
    '"e2e_processing_latency":{"count":0,"percentiles":null}},{"channel_name":"other","depth":3,'
    '"backend_depth":0,"in_flight_count":0,"deferred_count":0,"message_count":3,"requeue_count":0,'
    '"timeout_count":0,"client_count":0,"clients":null,"paused":false,"e2e_processing_latency":'
    '{"count":0,"percentiles":null}}],"depth":0,"backend_depth":0,"message_count":5,"message_bytes":8,'
    '"paused":false,"e2e_processing_latency":{"count":0,"percentiles":null}}],"producers":null}'
)


def test_a_channel_with_a_message() -> None:
    parsed = parse_stats("t", 200, ONE_CHANNEL)
    assert parsed == TopicStats(exists=True, depth=0, channels={"c": ChannelStats(depth=1, in_flight=0)})
    assert channel_stats(parsed, "c") == ChannelStats(1, 0, deferred=0, paused=False, channel_exists=True)


def test_bytes_and_str_bodies_read_the_same() -> None:
    assert parse_stats("t", 200, ONE_CHANNEL.encode()) == parse_stats("t", 200, ONE_CHANNEL)


def test_in_flight_and_deferred_are_read_per_channel() -> None:
    parsed = parse_stats("t", 200, BUSY)
    ours = channel_stats(parsed, "c")
    assert ours == ChannelStats(depth=2, in_flight=2, deferred=1)
    assert isinstance(ours, ChannelStats)
    assert ours.backlog == 4  # deferred ones want no worker yet
    assert channel_stats(parsed, "other") == ChannelStats(depth=3, in_flight=0)


def test_a_topic_the_nsqd_does_not_have() -> None:
    parsed = parse_stats("t", 200, NO_SUCH_TOPIC)
    assert parsed == TopicStats(exists=False)
    assert channel_stats(parsed, "c") == ChannelStats(depth=0, in_flight=0, channel_exists=False)
    # Another topic's numbers are not ours.
    assert parse_stats("t", 200, answer([topic("u", [channel("c", depth=9)])])) == TopicStats(exists=False)
    assert parse_stats("t", 200, answer([])) == TopicStats(exists=False)


def test_a_topic_without_channels_keeps_its_depth_for_the_first_channel() -> None:
    parsed = parse_stats("t", 200, TOPIC_WITHOUT_CHANNELS)
    assert parsed == TopicStats(exists=True, depth=1, channels={})
    assert channel_stats(parsed, "c") == ChannelStats(depth=1, in_flight=0, channel_exists=False)
    as_null = parse_stats("t", 200, answer([topic("t", None, depth=40)]))  # `"channels": null` alike
    assert channel_stats(as_null, "c") == ChannelStats(depth=40, in_flight=0, channel_exists=False)


def test_a_missing_channel_next_to_others_has_no_backlog() -> None:
    """Once any channel exists, the topic copies each message to its channels only: none waits for us."""
    parsed = parse_stats("t", 200, answer([topic("t", [channel("other", depth=7)], depth=5)]))
    assert channel_stats(parsed, "c") == ChannelStats(depth=0, in_flight=0, channel_exists=False)


def test_a_paused_channel() -> None:
    paused = answer([topic("t", [channel("c", depth=2, in_flight_count=1, paused=True)])])
    found = channel_stats(parse_stats("t", 200, paused), "c")
    assert found == ChannelStats(depth=2, in_flight=1, paused=True)
    assert found.backlog == 0
    not_true = answer([topic("t", [channel("c", depth=2, paused="yes")])])  # only a real true pauses
    assert channel_stats(parse_stats("t", 200, not_true), "c") == ChannelStats(depth=2, in_flight=0)


def test_the_old_wrapped_shape() -> None:
    inner = json.loads(answer([topic("t", [channel("c", depth=12, in_flight_count=3)], depth=1)]))
    wrapped = json.dumps({"status_code": 200, "status_txt": "OK", "data": inner})
    parsed = parse_stats("t", 200, wrapped)
    assert parsed == parse_stats("t", 200, json.dumps(inner))
    assert channel_stats(parsed, "c") == ChannelStats(depth=12, in_flight=3)
    # Only the 0.x envelope is unwrapped: a 1.x answer that happens to have a "data" object is read as is.
    unwrapped = dict(inner, data={"topics": None})
    assert channel_stats(parse_stats("t", 200, json.dumps(unwrapped)), "c") == ChannelStats(12, 3)


def test_numbers_nsqd_did_not_write_count_as_zero() -> None:
    parsed = parse_stats("t", 200, answer([{"topic_name": "t", "channels": [{"channel_name": "c"}]}]))
    assert parsed == TopicStats(exists=True, depth=0, channels={"c": ChannelStats(0, 0)})


def test_large_counts_are_kept_exactly() -> None:
    big = 2**62 + 1
    parsed = parse_stats("t", 200, answer([topic("t", [channel("c", depth=big, in_flight_count=big)])]))
    assert channel_stats(parsed, "c") == ChannelStats(depth=big, in_flight=big)


@pytest.mark.parametrize("status", [301, 404, 500, 502, 503])
def test_an_answer_other_than_200(status: int) -> None:
    assert parse_stats("t", status, ONE_CHANNEL) == Unreadable(f"/stats answered HTTP {status}")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b"\xff\xfe\x00garbage",
        "{",
        '{"topics": [',
        "[" * 100_000,
        '{"topics": [{"topic_name": "t", "depth": ' + "9" * 5000 + "}]}",
    ],
    ids=["empty", "html", "binary", "brace", "truncated", "too-deep", "5000-digit-number"],
)
def test_an_answer_that_is_not_json(body: bytes | str) -> None:
    assert parse_stats("t", 200, body) == Unreadable("/stats did not answer JSON")


@pytest.mark.parametrize("body", ["[]", "null", "3", '"OK"', "true"])
def test_an_answer_that_is_not_an_object(body: str) -> None:
    assert parse_stats("t", 200, body) == Unreadable("/stats answered something other than an object")


@pytest.mark.parametrize("topics", ['"t"', "7", "true", '{"t": {}}'])
def test_topics_that_are_not_a_list(topics: str) -> None:
    parsed = parse_stats("t", 200, f'{{"version": "1.3.0", "topics": {topics}}}')
    assert parsed == Unreadable("/stats has no topics list")


@pytest.mark.parametrize(
    ("channels", "reason"),
    [
        (["c"], "/stats has a malformed channel entry"),
        ([None], "/stats has a malformed channel entry"),
        ([{"depth": 3}], "/stats has a malformed channel entry"),
        ([{"channel_name": 7, "depth": 3}], "/stats has a malformed channel entry"),
        ([channel("c"), "junk"], "/stats has a malformed channel entry"),
        ({"c": channel("c")}, "/stats has a malformed channel entry"),  # an object: its keys are no entries
        ([channel("c", depth="3")], "/stats has non-numeric counts for channel 'c'"),
        ([channel("c", depth=-1)], "/stats has non-numeric counts for channel 'c'"),
        ([channel("c", depth=1.5)], "/stats has non-numeric counts for channel 'c'"),
        ([channel("c", depth=True)], "/stats has non-numeric counts for channel 'c'"),
        ([channel("c", depth=None)], "/stats has non-numeric counts for channel 'c'"),
        ([channel("c", in_flight_count=[1])], "/stats has non-numeric counts for channel 'c'"),
        ([channel("c", deferred_count={})], "/stats has non-numeric counts for channel 'c'"),
        ([channel("ok"), channel("bad", depth="x")], "/stats has non-numeric counts for channel 'bad'"),
    ],
)
def test_malformed_channels_are_unreadable_and_say_why(channels: Any, reason: str) -> None:
    parsed = parse_stats("t", 200, answer([topic("t", channels)]))
    assert parsed == Unreadable(reason)
    assert channel_stats(parsed, "c") == Unreadable(reason), "no numbers: the autoscaler holds"


@pytest.mark.parametrize("depth", ["1", -3, 2.5, False, None, [0]])
def test_a_malformed_topic_depth_is_unreadable(depth: Any) -> None:
    parsed = parse_stats("t", 200, answer([topic("t", [], depth=depth)]))
    assert parsed == Unreadable("/stats has a non-numeric topic depth")


@pytest.mark.parametrize("channels", [5, 2.5, True, "c"])
def test_channels_that_are_no_list_are_unreadable(channels: Any) -> None:
    """`"channels": 5` must be an Unreadable, not a TypeError out of the poll."""
    parsed = parse_stats("t", 200, answer([topic("t", channels)]))
    assert isinstance(parsed, Unreadable)


def test_the_right_topic_is_picked_among_several() -> None:
    body = answer([topic("u", [channel("c", depth=100)]), "junk", topic("t", [channel("c", depth=4)])])
    assert channel_stats(parse_stats("t", 200, body), "c") == ChannelStats(depth=4, in_flight=0)


def test_unreadable_passes_through_channel_stats() -> None:
    why = Unreadable("/stats at 10.0.0.1:4151: no complete answer within 2 s")
    assert channel_stats(why, "c") is why


# --- fuzz ---------------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
# Shapes close to nsqd's, with any value in any field: what a bug, an old version or a proxy might send.
counts = json_values | st.integers(0, 10**6)
near_channels = st.fixed_dictionaries(
    {"channel_name": st.just("c") | json_values},
    optional={k: counts for k in ["depth", "in_flight_count", "deferred_count", "paused", "clients"]},
)
near_topics = st.fixed_dictionaries(
    {"topic_name": st.just("t") | json_values},
    optional={
        "channels": st.lists(near_channels | json_values, max_size=3) | json_scalars | json_values,
        "depth": counts,
        "paused": json_values,
    },
)
near_answers = st.fixed_dictionaries(
    {"topics": st.lists(near_topics | json_values, max_size=3) | json_values},
    optional={"version": st.just("1.3.0"), "status_code": st.just(200)},
)
wrapped_answers = st.fixed_dictionaries(
    {"status_code": st.just(200), "status_txt": st.just("OK"), "data": near_answers}
)


def check(parsed: TopicStats | Unreadable) -> None:
    if isinstance(parsed, Unreadable):
        assert isinstance(parsed.reason, str)
        assert parsed.reason.startswith("/stats ")
        return
    assert isinstance(parsed, TopicStats)
    assert isinstance(parsed.depth, int)
    assert parsed.depth >= 0
    for name, found in (parsed.channels or {}).items():
        assert isinstance(name, str)
        for count in (found.depth, found.in_flight, found.deferred):
            assert type(count) is int
            assert count >= 0
        assert found.backlog >= 0
    for name in ("c", "t", ""):
        result = channel_stats(parsed, name)
        assert isinstance(result, ChannelStats)
        assert result.backlog >= 0


@FUZZ
@given(value=json_values, status=st.sampled_from([200, 200, 200, 500]))
def test_parse_stats_never_raises_on_any_json(value: Any, status: int) -> None:
    check(parse_stats("t", status, json.dumps(value)))


@FUZZ
@given(value=near_answers | wrapped_answers)
def test_parse_stats_never_raises_on_answers_shaped_like_nsqds(value: Any) -> None:
    check(parse_stats("t", 200, json.dumps(value)))


@FUZZ
@given(body=st.binary(max_size=200) | st.text(max_size=200))
def test_parse_stats_never_raises_on_any_bytes(body: bytes | str) -> None:
    check(parse_stats("t", 200, body))
