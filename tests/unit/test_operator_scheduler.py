"""The scheduler's bookkeeping that needs no cluster: liveness, shared lookups, stale answers.

The loops themselves run against the real control plane in tests/integration/test_operator_scheduler.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from nsq_operator import reconcile, scheduler
from nsq_operator.lookupd import Lookup, LookupFailure, Producers
from nsq_operator.scheduler import Scheduler


def make() -> Scheduler:
    kube: Any = None  # never called: nothing here reconciles
    return Scheduler(kube, lambda key: [], executor=None)  # type: ignore[arg-type]


def consumer(name: str, lookupds: list[str], interval: int, topic: str = "orders") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team", "name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "topic": topic,
            "channel": "billing",
            "lookupd": {"httpAddresses": lookupds, "pollIntervalSeconds": interval},
        },
    }


def test_a_loop_that_stopped_turning_fails_liveness() -> None:
    found = make()
    assert found.problem() is None
    found.last_tick = time.monotonic() - scheduler.STALLED_AFTER - 1
    assert "has not turned" in (found.problem() or "")


def test_a_reconcile_stuck_in_its_thread_fails_liveness() -> None:
    found = make()
    found.upsert(consumer("a", ["http://l1"], 5))
    found.consumers[("team", "a")].running_since = time.monotonic() - scheduler.STUCK_AFTER - 1
    assert "the reconcile of team/a has run for" in (found.problem() or "")


def test_consumers_share_one_lookup_per_lookupd_and_topic_at_the_shortest_interval() -> None:
    found = make()
    found.upsert(consumer("a", ["http://l1", "http://l2"], 10))
    found.upsert(consumer("b", ["http://l1"], 3))
    found.upsert(consumer("c", ["http://l1"], 7, topic="other"))
    assert set(found.groups) == {("http://l1", "orders"), ("http://l2", "orders"), ("http://l1", "other")}
    assert found.groups[("http://l1", "orders")].interval == 3
    assert found.groups[("http://l2", "orders")].interval == 10
    found.remove(("team", "b"))
    assert found.groups[("http://l1", "orders")].interval == 10
    found.remove(("team", "a"))
    assert set(found.groups) == {("http://l1", "other")}


def test_a_deleted_consumer_is_dropped_and_a_new_one_under_its_name_starts_afresh() -> None:
    found = make()
    found.upsert(consumer("a", ["http://l1"], 5))
    first = found.consumers[("team", "a")]
    deleting = consumer("a", ["http://l1"], 5)
    deleting["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    found.upsert(deleting)
    assert ("team", "a") not in found.consumers
    assert found.groups == {}
    found.upsert(consumer("a", ["http://l1"], 5))
    assert found.consumers[("team", "a")] is not first


def test_missing_and_stale_answers_are_failures_never_old_producers() -> None:
    found = make()
    found.upsert(consumer("a", ["http://l1", "http://l2"], 2))
    slot = found.consumers[("team", "a")]
    lookup = found._lookup(slot)
    assert lookup is not None
    assert all(isinstance(a, LookupFailure) for a in lookup.answers)
    fresh, old = found.groups[("http://l1", "orders")], found.groups[("http://l2", "orders")]
    fresh.answer, fresh.answered_at = Producers("http://l1", frozenset({"n:4150"})), time.monotonic()
    old.answer, old.answered_at = Producers("http://l2", frozenset({"m:4150"})), time.monotonic() - 60
    lookup = found._lookup(slot)
    assert lookup is not None
    assert lookup.producers == frozenset({"n:4150"})
    assert "no answer for" in lookup.failures[0].reason


def test_a_reconcile_for_a_consumer_that_went_away_calls_no_api() -> None:
    """`still_wanted` is asked before every write: with it False, not one call is made (kube is None)."""
    body = consumer("a", ["http://l1"], 5)
    answer = Producers("http://l1", frozenset({"10.0.0.1:4150", "10.0.0.2:4150"}))
    inputs = reconcile.Inputs(
        body=body,
        lookup=Lookup((answer,)),
        workers=(),
        drifted=frozenset(),
        now=datetime.now(UTC),
        deadline=time.monotonic() + 60,
        still_wanted=lambda: False,
    )
    kube: Any = None
    outcome = reconcile.reconcile(kube, inputs, reconcile.ConsumerState())
    assert outcome.abandoned
    assert outcome.written == []
