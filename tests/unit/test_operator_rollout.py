"""Gradual rollouts: when a Deployment is rolling (as kubectl reads it), the operator-wide budget, and
what the consumer's status and events say."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsq_operator import events, live, manifests, rollout, status
from nsq_operator.rollout import Budget, Progress, Summary
from nsq_operator.spec import ConsumerSpec, parse

COMPLETE, STALLED = rollout.COMPLETE, rollout.STALLED


def deployment(
    generation: int = 2,
    observed: int = 2,
    replicas: int | None = 1,
    status_replicas: int = 1,
    updated: int = 1,
    available: int = 1,
    progressing: str | None = COMPLETE,
) -> dict[str, Any]:
    """A Deployment body shaped as the API server returns it."""
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "replicas": status_replicas,
        "updatedReplicas": updated,
        "readyReplicas": available,
        "availableReplicas": available,
    }
    if progressing is not None:
        status["conditions"] = [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {
                "type": "Progressing",
                "status": "False" if progressing == STALLED else "True",
                "reason": progressing,
            },
        ]
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    return {"metadata": {"name": "w", "generation": generation}, "spec": spec, "status": status}


def rolling(**fields: Any) -> bool:
    return rollout.in_progress(rollout.progress(deployment(**fields)))


# --- rolling, as `kubectl rollout status` reads it ----------------------------------------------------


def test_a_settled_deployment_is_not_rolling() -> None:
    assert not rolling()
    assert not rollout.stalled(rollout.progress(deployment()))


def test_a_spec_the_controller_has_not_seen_yet_is_rolling() -> None:
    """Right after the operator's write, before the controller has made the new ReplicaSet."""
    assert rolling(generation=3, observed=2)
    assert rolling(generation=3, observed=2, progressing=STALLED)  # a new template restarts the clock


def test_each_step_of_a_one_replica_rollout_is_rolling_until_the_new_pod_is_available() -> None:
    """maxSurge 0, maxUnavailable 1: the old pod goes, the new one starts, then becomes available."""
    steps = [
        {"progressing": "NewReplicaSetCreated", "updated": 0, "status_replicas": 1},  # old pod still runs
        {"progressing": "NewReplicaSetCreated", "updated": 0, "status_replicas": 0, "available": 0},
        {"progressing": "ReplicaSetUpdated", "updated": 1, "status_replicas": 1, "available": 0},
    ]
    for step in steps:
        assert rolling(**step), step
    assert not rolling(progressing=COMPLETE)


def test_old_pods_still_running_keep_it_rolling() -> None:
    assert rolling(replicas=2, status_replicas=3, updated=2, available=2, progressing="ReplicaSetUpdated")


def test_a_completed_deployment_whose_pod_crashes_later_is_failing_not_rolling() -> None:
    """The controller keeps NewReplicaSetAvailable once complete; Ready says the worker fails."""
    assert not rolling(available=0, progressing=COMPLETE)
    assert rolling(available=0, progressing="ReplicaSetUpdated")
    assert rolling(available=0, progressing=None)  # no deadline: no condition, counts decide


def test_a_rollout_past_its_deadline_has_failed_and_stalled() -> None:
    p = rollout.progress(deployment(available=0, progressing=STALLED))
    assert not rollout.in_progress(p)
    assert rollout.stalled(p)
    assert not rollout.stalled(rollout.progress(deployment(generation=3, observed=2, progressing=STALLED)))


def test_zero_replicas_wait_for_no_pod() -> None:
    assert not rolling(replicas=0, status_replicas=0, updated=0, available=0, progressing="ReplicaSetUpdated")
    assert rolling(replicas=0, status_replicas=1, updated=0, available=0, progressing="ReplicaSetUpdated")


def test_unset_replicas_count_as_one_and_a_bare_body_is_read_safely() -> None:
    assert rolling(replicas=None, updated=0, status_replicas=0, available=0)
    assert rollout.progress({}) == Progress()
    assert not rollout.in_progress(Progress(replicas=0))


@given(
    st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5),
    st.sampled_from([None, COMPLETE, STALLED, "ReplicaSetUpdated", "NewReplicaSetCreated"]),
    st.integers(0, 2),
)  # fmt: skip
def test_rolling_and_stalled_never_both_and_settled_means_every_pod_new_and_available(
    replicas: int,
    status_replicas: int,
    updated: int,
    available: int,
    behind: int,
    reason: str | None,
    gen: int,
) -> None:
    p = Progress(gen + behind, gen, replicas, status_replicas, updated, available, reason)
    assert not (rollout.in_progress(p) and rollout.stalled(p))
    if not rollout.in_progress(p) and not rollout.stalled(p):
        assert behind == 0
        assert updated >= replicas
        assert status_replicas <= updated
        assert available >= updated or reason == COMPLETE


def test_only_a_deployment_with_pods_needs_a_place() -> None:
    assert rollout.needs_place(1, 1)
    assert rollout.needs_place(0, 2)  # resumed at the same time: its new pods start with the new template
    assert rollout.needs_place(2, 0)
    assert rollout.needs_place(None, None)  # unset: 1
    assert rollout.needs_place(1, None)  # an autoscaler owns the count
    assert not rollout.needs_place(0, 0)
    assert not rollout.needs_place(0, None)


# --- the budget ---------------------------------------------------------------------------------------

A, B, C, D = (("ns", n) for n in "abcd")


@given(st.integers(0, 6), st.frozensets(st.sampled_from([A, B, C, D])), st.sampled_from([A, B, C, D]))
def test_admit(limit: int, taken: frozenset[tuple[str, str]], key: tuple[str, str]) -> None:
    expected = limit == 0 or key in taken or len(taken) < limit
    assert rollout.admit(limit, taken, key) is expected


def test_places_are_taken_up_to_the_limit_and_kept_by_their_holders() -> None:
    budget = Budget(2)
    assert budget.acquire(A)
    assert budget.acquire(B)
    assert not budget.acquire(C)
    assert budget.acquire(A)  # it holds one already
    assert budget.in_use() == 2


def test_a_place_holds_from_the_write_through_the_rollout_and_frees_when_it_completes() -> None:
    budget = Budget(1)
    assert budget.acquire(A)
    budget.written(A, generation=5)
    assert not budget.observe(A, generation=4, rolling=False)  # an older event: the write is not seen yet
    assert not budget.acquire(B)
    assert not budget.observe(A, generation=5, rolling=True)  # the watch shows it rolling
    assert not budget.acquire(B)
    assert budget.observe(A, generation=5, rolling=False)  # complete: a place freed
    assert budget.acquire(B)


def test_a_failed_write_gives_its_place_back() -> None:
    budget = Budget(1)
    assert budget.acquire(A)
    budget.release(A)
    assert budget.acquire(B)


def test_what_rolls_when_the_operator_starts_fills_the_budget() -> None:
    """A restarted operator's watch lists Deployments mid-rollout: they hold their places."""
    budget = Budget(2)
    budget.observe(A, 3, rolling=True)
    budget.observe(B, 7, rolling=True)
    budget.observe(C, 1, rolling=False)
    assert not budget.acquire(C)
    assert budget.acquire(A)
    assert budget.observe(B, 7, rolling=False, deleted=True)
    assert budget.acquire(C)


def test_a_place_never_confirmed_by_the_watch_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = Budget(1)
    assert budget.acquire(A)
    budget.written(A, 9)
    clock = time.monotonic() + rollout.PENDING_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: clock)
    assert budget.acquire(B)


def test_no_limit_and_the_gauge_callback() -> None:
    seen: list[int] = []
    budget = Budget(0, seen.append)
    assert all(budget.acquire(("ns", str(n))) for n in range(50))
    assert seen[-1] == 50


def test_threads_racing_for_places_never_exceed_the_limit() -> None:
    budget = Budget(3)
    granted: list[tuple[str, str]] = []
    lock = threading.Lock()

    def take(n: int) -> None:
        if budget.acquire(("ns", f"d{n}")):
            with lock:
                granted.append(("ns", f"d{n}"))

    threads = [threading.Thread(target=take, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 3
    assert budget.in_use() == 3


# --- the live view ------------------------------------------------------------------------------------

SPEC = {"topic": "t", "channel": "c", "lookupd": {"httpAddresses": ["http://l:4161"]}}
OWNER = manifests.Owner("orders", "shop", "uid-1")


def test_the_live_view_carries_the_rollout_and_the_template_hash() -> None:
    spec = parse(SPEC)
    assert isinstance(spec, ConsumerSpec)
    body = manifests.deployment(OWNER, spec, "10.0.0.1:4150")
    body["metadata"]["generation"] = 2
    body["status"] = deployment(observed=1)["status"]
    view = live.view(body)
    assert view.rolling
    assert not view.stalled
    assert view.template_hash == manifests.template_hash(OWNER, spec, "10.0.0.1:4150")
    body["status"]["observedGeneration"] = 2
    assert not live.view(body).rolling


# --- condition and events -----------------------------------------------------------------------------


def test_the_condition_counts_updated_rolling_and_waiting() -> None:
    assert rollout.condition(Summary(4, 0, 0)) == (
        "False",
        "UpToDate",
        "All 4 worker Deployments run the current pod template.",
    )
    assert rollout.condition(Summary(10, 2, 5, limit=2)) == (
        "True",
        "WaitingForRolloutBudget",
        "3 of 10 worker Deployments updated, 2 rolling out, 5 waiting for the rollout budget "
        "(at most 2 at a time, operator-wide).",
    )
    assert rollout.condition(Summary(3, 1, 0, limit=0))[1:] == (
        "RollingOut",
        "2 of 3 worker Deployments updated, 1 rolling out, 0 waiting for the rollout budget (no limit).",
    )
    status, reason, message = rollout.condition(Summary(6, 0, 1, ("w-a", "w-b", "w-c", "w-d")))
    assert (status, reason) == ("True", "RolloutStalled")
    assert message.endswith("past their progress deadline: w-a, w-b, w-c and 1 more.")


def reasons(found: list[events.Event]) -> list[str]:
    return [e.reason for e in found]


def test_events_mark_the_start_the_wait_and_the_end_once_each() -> None:
    polls = [Summary(10, 2, 8), Summary(10, 2, 6), Summary(10, 1, 0), Summary(10, 0, 0), Summary(10, 0, 0)]
    said: list[list[str]] = []
    active, waiting, stalled = False, 0, frozenset[str]()
    for summary in polls:
        said.append(reasons(events.for_rollout(active, waiting, stalled, summary)))
        active, waiting, stalled = summary.active, summary.waiting, frozenset(summary.stalled)
    assert said == [["RolloutStarted", "RolloutWaiting"], [], [], ["RolloutComplete"], []]


def test_a_rollout_that_fits_the_budget_says_started_and_complete_only() -> None:
    started = events.for_rollout(False, 0, (), Summary(2, 2, 0, limit=2))
    assert reasons(started) == ["RolloutStarted"]
    assert started[0].message == (
        "Rolling out a new pod template to 2 of 2 worker Deployments (at most 2 at a time, operator-wide)"
    )
    assert events.for_rollout(True, 0, (), Summary(2, 2, 0)) == []
    [done] = events.for_rollout(True, 0, (), Summary(2, 0, 0))
    assert (done.type, done.reason) == (events.NORMAL, "RolloutComplete")


def test_a_stall_is_one_warning_per_deployment() -> None:
    first = events.for_rollout(True, 0, (), Summary(3, 0, 0, ("w-a",)))
    assert [(e.type, e.reason) for e in first] == [(events.WARNING, "RolloutStalled")]
    assert "w-a" in first[0].message
    assert events.for_rollout(True, 0, ("w-a",), Summary(3, 0, 0, ("w-a",))) == []
    assert reasons(events.for_rollout(True, 0, ("w-a",), Summary(3, 0, 0, ("w-a", "w-b")))) == [
        "RolloutStalled"
    ]
    assert reasons(events.for_rollout(True, 0, ("w-a",), Summary(3, 0, 0))) == ["RolloutComplete"]


def test_waiting_again_after_a_pause_in_waiting_is_said_again() -> None:
    assert reasons(events.for_rollout(True, 0, (), Summary(5, 2, 1))) == ["RolloutWaiting"]
    assert events.for_rollout(True, 3, (), Summary(5, 2, 1)) == []


def test_the_status_carries_the_condition_and_keeps_it_when_not_judged() -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    built = status.build(status.Observation("orders", 2, now, rollout=Summary(4, 1, 2)), None)
    said = status.condition(built, status.ROLLOUT_PROGRESSING)
    assert said is not None
    assert (said["status"], said["reason"]) == ("True", "WaitingForRolloutBudget")
    assert said["message"].startswith("1 of 4 worker Deployments updated")
    assert [c["type"] for c in built["conditions"]][-1] == status.ROLLOUT_PROGRESSING
    kept = status.build(status.Observation("orders", 2, now), built)
    assert status.condition(kept, status.ROLLOUT_PROGRESSING) == said
    done = status.build(status.Observation("orders", 2, now, rollout=Summary(4, 0, 0)), built)
    assert (status.condition(done, status.ROLLOUT_PROGRESSING) or {}).get("reason") == "UpToDate"
