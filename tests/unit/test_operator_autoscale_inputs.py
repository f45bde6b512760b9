"""What one reconcile hands the autoscaler for each nsqd: its numbers when it is listed and read,
a quiet hold when it is not listed (leaving, or no lookupd answered), a loud hold when it is listed
but cannot be read."""

from __future__ import annotations

from datetime import UTC, datetime

from nsq_operator import reconcile
from nsq_operator.autoscale import ChannelStats, Unreadable
from nsq_operator.live import WorkerView
from nsq_operator.lookupd import Lookup, LookupFailure, Producers
from nsq_operator.spec import ConsumerSpec, parse

A, B = "10.0.0.1:4150", "10.0.0.2:4150"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec() -> ConsumerSpec:
    parsed = parse(
        {
            "topic": "t",
            "channel": "c",
            "lookupd": {"httpAddresses": ["http://l:4161"]},
            "autoscaling": {"enabled": True, "maxReplicas": 8, "targetBacklogPerReplica": 100},
        }
    )
    assert isinstance(parsed, ConsumerSpec), parsed
    return parsed


def worker(address: str, replicas: int) -> WorkerView:
    return WorkerView(
        "ns", f"w-{address}", f"uid-{address}", "orders", "owner", address, "fp", replicas, 0, 1
    )


def inputs(stats: dict[str, ChannelStats | Unreadable]) -> reconcile.Inputs:
    return reconcile.Inputs(
        body={}, lookup=None, workers=(), drifted=frozenset(), now=NOW, deadline=0.0,
        still_wanted=lambda: True, stats=stats,
    )  # fmt: skip


def test_listed_and_read_follows_the_backlog() -> None:
    found = Lookup((Producers("http://l:4161", frozenset({A})),))
    state = reconcile.ConsumerState()
    decided = reconcile._autoscale(spec(), found, [worker(A, 1)], state, inputs({A: ChannelStats(500, 0)}))
    assert decided[A].desired == 5
    assert decided[A].unreadable is None


def test_no_lookupd_answer_holds_every_nsqd_quietly() -> None:
    found = Lookup((LookupFailure("http://l:4161", "no complete answer within 1 s"),))
    state = reconcile.ConsumerState()
    decided = reconcile._autoscale(spec(), found, [worker(A, 3), worker(B, 1)], state, inputs({}))
    assert {a: d.desired for a, d in decided.items()} == {A: 3, B: 1}
    assert all(d.unreadable is None for d in decided.values())  # LookupdReachable says why, once
    assert "not listed by nsqlookupd" in decided[A].reason


def test_a_leaving_nsqd_is_held_and_its_window_restarts() -> None:
    found = Lookup((Producers("http://l:4161", frozenset({A})),))
    state = reconcile.ConsumerState()
    state.recommendations[B] = ((NOW.timestamp() - 5, 4),)
    decided = reconcile._autoscale(
        spec(), found, [worker(A, 1), worker(B, 4)], state, inputs({A: ChannelStats(0, 0)})
    )
    assert decided[B].desired == 4
    assert decided[B].unreadable is None
    assert B not in state.recommendations


def test_a_listed_nsqd_without_numbers_is_held_and_said_so() -> None:
    found = Lookup((Producers("http://l:4161", frozenset({A, B})),))
    state = reconcile.ConsumerState()
    stats: dict[str, ChannelStats | Unreadable] = {
        A: ChannelStats(0, 0),
        B: Unreadable("/stats at 10.0.0.2:4151: connection refused"),
    }
    decided = reconcile._autoscale(spec(), found, [worker(A, 1), worker(B, 2)], state, inputs(stats))
    assert decided[B].desired == 2
    assert decided[B].unreadable == "/stats at 10.0.0.2:4151: connection refused"
    assert decided[B].reason.startswith("held at 2")
