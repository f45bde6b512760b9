"""Status, conditions and events built from one poll's observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nsq_operator import events, naming, status
from nsq_operator.lookupd import Lookup, LookupFailure, Producers
from nsq_operator.plan import Create, Delete, NsqdRecord, Plan, Scale, Update
from nsq_operator.spec import SpecError

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
A, B = "10.0.0.1:4150", "10.0.0.2:4150"
UP = Lookup((Producers("http://l1", frozenset({A, B})),))
PARTIAL = Lookup((Producers("http://l1", frozenset({A, B})), LookupFailure("http://l2", "HTTP 502")))
DOWN = Lookup((LookupFailure("http://l1", "ConnectionError: refused"),))
BOTH = Plan(
    (),
    (
        NsqdRecord(A, last_seen=NOW),
        NsqdRecord(B, last_seen=NOW - timedelta(seconds=30), missing_since=NOW - timedelta(seconds=20)),
    ),
)


def observe(**overrides: Any) -> status.Observation:
    values: dict[str, Any] = {
        "consumer": "orders",
        "generation": 3,
        "now": NOW,
        "lookup": UP,
        "plan": BOTH,
        "replicas": 1,
    }
    return status.Observation(**(values | overrides))


def ready_for(*addresses: str) -> dict[str, int]:
    return {naming.worker_name("orders", a): 1 for a in addresses}


def conditions(built: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in built["conditions"]}


def test_all_ready() -> None:
    built = status.build(observe(ready=ready_for(A, B)), None)
    assert built["observedGeneration"] == 3
    assert (built["nsqdCount"], built["desiredWorkers"], built["readyWorkers"]) == (2, 2, 2)
    assert built["lastLookupTime"] == "2025-01-01T12:00:00Z"
    assert built["nsqds"] == [
        {
            "address": A,
            "deployment": naming.worker_name("orders", A),
            "readyReplicas": 1,
            "lastSeen": "2025-01-01T12:00:00Z",
        },
        {
            "address": B,
            "deployment": naming.worker_name("orders", B),
            "readyReplicas": 1,
            "lastSeen": "2025-01-01T11:59:30Z",
            "missingSince": "2025-01-01T11:59:40Z",
        },
    ]
    assert conditions(built) == {
        "SpecValid": ("True", "Valid"),
        "LookupdReachable": ("True", "AllReachable"),
        "Ready": ("True", "AllWorkersReady"),
    }
    assert [c["type"] for c in built["conditions"]] == ["Ready", "LookupdReachable", "SpecValid"]
    assert all(
        c["observedGeneration"] == 3 and c["lastTransitionTime"] == "2025-01-01T12:00:00Z"
        for c in built["conditions"]
    )


def test_workers_not_ready_yet() -> None:
    built = status.build(observe(ready=ready_for(A)), None)
    assert conditions(built)["Ready"] == ("False", "WorkersNotReady")
    assert "1 of 2" in status.condition(built, "Ready")["message"]  # type: ignore[index]


def test_no_producers_is_ready() -> None:
    built = status.build(observe(plan=Plan((), ())), None)
    assert (built["nsqdCount"], built["desiredWorkers"]) == (0, 0)
    assert conditions(built)["Ready"] == ("True", "NoProducers")


def test_paused() -> None:
    built = status.build(observe(paused=True, replicas=0), None)
    assert built["desiredWorkers"] == 0
    assert conditions(built)["Ready"] == ("False", "Paused")


def test_partially_reachable_lookupd_says_which_failed() -> None:
    built = status.build(observe(lookup=PARTIAL, ready=ready_for(A, B)), None)
    assert conditions(built)["LookupdReachable"] == ("True", "PartiallyReachable")
    assert "http://l2: HTTP 502" in status.condition(built, "LookupdReachable")["message"]  # type: ignore[index]
    assert conditions(built)["Ready"] == ("True", "AllWorkersReady")


def test_unreachable_lookupd() -> None:
    built = status.build(observe(lookup=DOWN), None)
    assert conditions(built)["LookupdReachable"] == ("False", "Unreachable")
    assert conditions(built)["Ready"] == ("Unknown", "LookupdUnreachable")


def test_api_failures_make_it_not_ready() -> None:
    failures = ("creating Deployment x: 403 Forbidden",)
    built = status.build(observe(ready=ready_for(A, B), failures=failures), None)
    assert conditions(built)["Ready"] == ("False", "ReconcileFailed")


def test_invalid_spec_only_touches_conditions() -> None:
    before = status.build(observe(ready=ready_for(A, B)), None)
    error = SpecError("spec.topic", "is required")
    later = NOW + timedelta(seconds=5)
    built = status.build(status.Observation("orders", 4, later, spec_error=error), before)
    assert set(built) == {"observedGeneration", "conditions"}
    assert conditions(built)["SpecValid"] == ("False", "InvalidSpec")
    assert conditions(built)["Ready"] == ("False", "InvalidSpec")
    assert conditions(built)["LookupdReachable"] == ("True", "AllReachable")  # what we last knew
    assert status.condition(built, "SpecValid")["message"] == "spec.topic: is required"  # type: ignore[index]


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    first = status.build(observe(ready=ready_for(A)), None)
    later = NOW + timedelta(minutes=1)
    same = status.build(observe(now=later, ready=ready_for(A)), first)
    assert status.condition(same, "Ready")["lastTransitionTime"] == "2025-01-01T12:00:00Z"  # type: ignore[index]
    flipped = status.build(observe(now=later, ready=ready_for(A, B)), first)
    assert status.condition(flipped, "Ready")["lastTransitionTime"] == "2025-01-01T12:01:00Z"  # type: ignore[index]
    assert status.condition(flipped, "SpecValid")["lastTransitionTime"] == "2025-01-01T12:00:00Z"  # type: ignore[index]


def test_records_round_trip_through_the_status() -> None:
    built = status.build(observe(), None)
    assert status.records_from_status(built) == {
        A: NsqdRecord(A, last_seen=NOW),
        B: NsqdRecord(B, last_seen=NOW - timedelta(seconds=30), missing_since=NOW - timedelta(seconds=20)),
    }
    assert status.records_from_status(None) == {}
    assert status.records_from_status({"nsqds": [{"address": A, "lastSeen": "garbage"}, "junk"]}) == {
        A: NsqdRecord(A)
    }


def test_only_timestamps_changed_is_never_written() -> None:
    first = status.build(observe(ready=ready_for(A, B)), None)
    assert status.needs_write(None, first)
    for seconds in (10, 60, 3600):
        later = status.build(observe(now=NOW + timedelta(seconds=seconds), ready=ready_for(A, B)), first)
        assert not status.needs_write(first, later)


def test_a_real_change_is_written_at_once() -> None:
    first = status.build(observe(ready=ready_for(A, B)), None)
    fewer_ready = status.build(observe(now=NOW + timedelta(seconds=1), ready=ready_for(A)), first)
    assert status.needs_write(first, fewer_ready)
    new_generation = status.build(observe(generation=4, ready=ready_for(A, B)), first)
    assert status.needs_write(first, new_generation)


# --- events ---------------------------------------------------------------------------------------------


def test_an_event_per_action() -> None:
    assert events.for_action(Create("w", A, 1), None) == events.Event(
        "Normal", "DeploymentCreated", f"Created Deployment w for nsqd {A} with 1 replica(s)"
    )
    assert events.for_action(Update("w", A, 1), None).reason == "DeploymentUpdated"
    assert events.for_action(Scale("w", A, 0), None).reason == "DeploymentScaled"
    assert events.for_action(Delete("w", A, "gone"), None).reason == "DeploymentDeleted"
    failed = events.for_action(Delete("w", None, "stray"), "403 Forbidden")
    assert (failed.type, failed.reason) == ("Warning", "DeleteFailed")
    assert "403 Forbidden" in failed.message


def test_lookupd_events_on_transitions_only() -> None:
    went_down = events.for_lookup(frozenset(), PARTIAL)
    assert [(e.type, e.reason) for e in went_down] == [("Warning", "LookupdFailed")]
    assert "http://l2" in went_down[0].message
    assert events.for_lookup({"http://l2"}, PARTIAL) == []
    came_back = events.for_lookup({"http://l2"}, Lookup((Producers("http://l2", frozenset()),)))
    assert [(e.type, e.reason) for e in came_back] == [("Normal", "LookupdRecovered")]


def test_held_deletions_warn_once() -> None:
    assert [e.reason for e in events.for_held_deletions((), ("w1",))] == ["DeletionHeld"]
    assert events.for_held_deletions(("w1",), ("w1",)) == []
    assert events.for_held_deletions(("w1",), ()) == []


def test_worker_problems_events_on_change_only() -> None:
    secret = 'pod p1: CreateContainerConfigError: secret "auth" not found'
    started = events.for_worker_problems({}, {A: secret})
    assert [(e.type, e.reason) for e in started] == [(events.WARNING, "WorkerFailing")]
    assert A in started[0].message
    assert 'secret "auth" not found' in started[0].message
    assert events.for_worker_problems({A: secret}, {A: secret}) == []
    changed = events.for_worker_problems({A: secret}, {A: "pod p1: ErrImagePull"})
    assert [e.reason for e in changed] == ["WorkerFailing"]
    recovered = events.for_worker_problems({A: secret}, {})
    assert [(e.type, e.reason) for e in recovered] == [(events.NORMAL, "WorkerRecovered")]


# --- why workers are not ready ----------------------------------------------------------------------------


def test_a_worker_problem_makes_ready_say_why() -> None:
    problem = 'pod p1: CreateContainerConfigError: secret "auth" not found'
    built = status.build(observe(ready=ready_for(A), problems={B: problem}), None)
    assert conditions(built)["Ready"] == ("False", "WorkersFailing")
    message = status.condition(built, "Ready")["message"]  # type: ignore[index]
    assert message == f"1 of 2 workers ready for 2 nsqd; nsqd {B}: {problem}"
    by_address = {entry["address"]: entry for entry in built["nsqds"]}
    assert by_address[B]["problem"] == problem
    assert "problem" not in by_address[A]


def test_many_worker_problems_are_summed_up_in_ready() -> None:
    addresses = [f"10.0.1.{i}:4150" for i in range(5)]
    plan = Plan((), tuple(NsqdRecord(a, last_seen=NOW) for a in addresses))
    built = status.build(observe(plan=plan, problems={a: "ErrImagePull" for a in addresses}), None)
    message = status.condition(built, "Ready")["message"]  # type: ignore[index]
    assert message.count("ErrImagePull") == status.MAX_PROBLEMS_SHOWN
    assert message.endswith("; and 2 more (see status.nsqds[].problem)")
    assert sum("problem" in entry for entry in built["nsqds"]) == 5


def test_problems_are_ignored_once_every_worker_is_ready() -> None:
    built = status.build(observe(ready=ready_for(A, B), problems={A: "Unhealthy"}), None)
    assert conditions(built)["Ready"] == ("True", "AllWorkersReady")
