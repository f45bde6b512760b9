"""Status, conditions and events built from one poll's observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from nsq_operator import events, naming, status
from nsq_operator.lookupd import Lookup, LookupFailure, Producers
from nsq_operator.manifests import Owner
from nsq_operator.plan import Create, Delete, NsqdRecord, Plan, Scale, Update
from nsq_operator.spec import SpecError

CRD = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "nsqconsumers.nsqoperator.dev.yaml"
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


SECRET_L1, SECRET_L2 = "http://ops:PLANTED-1@l1:4161", "https://ops:PLANTED-2@l2:4161"


def test_lookupd_credentials_never_reach_conditions_or_events() -> None:
    partial = Lookup(
        (Producers(SECRET_L1, frozenset({A})), LookupFailure(SECRET_L2, f"InvalidURL: {SECRET_L2}/lookup"))
    )
    down = Lookup((LookupFailure(SECRET_L1, "down"), LookupFailure(SECRET_L2, "down")))
    for lookup, says in [
        (partial, "https://***@l2:4161: InvalidURL: https://***@l2:4161/lookup"),
        (down, "http://***@l1:4161: down; https://***@l2:4161: down"),
    ]:
        built = status.build(observe(lookup=lookup), None)
        assert "PLANTED" not in str(built)
        assert says in str(status.condition(built, status.LOOKUPD_REACHABLE))
    went_down = events.for_lookup(frozenset(), down)
    came_back = events.for_lookup({SECRET_L1, SECRET_L2}, Lookup((Producers(SECRET_L1, frozenset()),)))
    assert [e.message for e in [*went_down, *came_back]] == [
        "nsqlookupd http://***@l1:4161 failed: down",
        "nsqlookupd https://***@l2:4161 failed: down",
        "nsqlookupd http://***@l1:4161 answers again",
    ]
    assert events.for_lookup({SECRET_L1, SECRET_L2}, down) == []  # still keyed by the URLs as written


def test_every_condition_and_event_message_is_redacted_whatever_it_quotes() -> None:
    """Messages that quote a URL without meaning to (a refused spec, an API error) are covered too."""
    quoted = f"spec.lookupd.httpAddresses[0]: must be an http:// or https:// URL, not '{SECRET_L1} x'"
    built = status.build(observe(spec_error=SpecError("spec.lookupd.httpAddresses[0]", quoted)), None)
    assert "PLANTED" not in str(built)
    assert "http://***@l1:4161" in str(status.condition(built, status.SPEC_VALID))
    owner = Owner("orders", "default", "uid-1")
    posted = events.body(owner, events.Event(events.WARNING, "InvalidSpec", quoted), NOW)
    assert "PLANTED" not in str(posted)
    assert "http://***@l1:4161" in posted["message"]


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


# --- the autoscaler's figures and the ScalingActive condition ----------------------------------------------

HOT = status.NsqdScaling(
    depth=1200,
    in_flight=30,
    current=1,
    desired=2,
    reason="backlog 1230 (depth 1200 + in flight 30): up from 1",
)
BLIND = status.NsqdScaling(
    depth=None, in_flight=None, current=None, desired=1, reason="held at 1: refused", unreadable="refused"
)
STEADY = status.NsqdScaling(depth=0, in_flight=0, current=1, desired=1, reason="backlog 0 wants 0")


def scaled(**overrides: Any) -> status.Observation:
    values: dict[str, Any] = {"scaling": {A: HOT, B: STEADY}, "desired_total": 3, "ready": ready_for(A, B)}
    return observe(**(values | overrides))


def test_nsqd_entries_carry_the_autoscalers_figures() -> None:
    built = status.build(scaled(scaling={A: HOT, B: BLIND}), None)
    by_address = {entry["address"]: entry for entry in built["nsqds"]}
    assert by_address[A] == {
        "address": A,
        "deployment": naming.worker_name("orders", A),
        "readyReplicas": 1,
        "lastSeen": "2025-01-01T12:00:00Z",
        "depth": 1200,
        "inFlight": 30,
        "replicas": 1,
        "desiredReplicas": 2,
        "scaleReason": HOT.reason,
    }
    blind = by_address[B]
    assert "depth" not in blind
    assert "inFlight" not in blind, "unknown is not zero"
    assert (blind["replicas"], blind["desiredReplicas"], blind["scaleReason"]) == (0, 1, "held at 1: refused")
    assert built["desiredWorkers"] == 3, "the autoscaler's sum, not nsqd count x replicas"


def test_without_the_autoscaler_entries_have_no_figures() -> None:
    built = status.build(observe(ready=ready_for(A, B)), None)
    for entry in built["nsqds"]:
        assert not {"depth", "inFlight", "replicas", "desiredReplicas", "scaleReason"} & entry.keys()
    assert status.condition(built, status.SCALING_ACTIVE) is None


def test_scaling_active_when_every_nsqd_is_read() -> None:
    built = status.build(scaled(), None)
    assert conditions(built)["ScalingActive"] == ("True", "BacklogPerNsqd")
    assert [c["type"] for c in built["conditions"]] == [
        "Ready",
        "LookupdReachable",
        "SpecValid",
        "ScalingActive",
    ]
    message = status.condition(built, "ScalingActive")["message"]  # type: ignore[index]
    assert message == "Replicas of each of 2 nsqd follow that nsqd's own backlog."
    assert conditions(built)["Ready"] == ("False", "WorkersNotReady"), "2 of 3 workers ready"


def test_scaling_inactive_names_the_nsqd_it_cannot_read() -> None:
    built = status.build(scaled(scaling={A: HOT, B: BLIND}), None)
    assert conditions(built)["ScalingActive"] == ("False", "StatsUnreadable")
    message = status.condition(built, "ScalingActive")["message"]  # type: ignore[index]
    assert message.startswith("1 of 2 nsqd cannot be read, so their replicas are held")
    assert message.endswith(f"; nsqd {B}: refused")
    assert A not in message


def test_many_unreadable_nsqd_are_summed_up() -> None:
    addresses = [f"10.0.1.{i}:4150" for i in range(5)]
    plan = Plan((), tuple(NsqdRecord(a, last_seen=NOW) for a in addresses))
    built = status.build(observe(plan=plan, scaling=dict.fromkeys(addresses, BLIND)), None)
    message = status.condition(built, "ScalingActive")["message"]  # type: ignore[index]
    assert message.startswith("5 of 5 nsqd cannot be read")
    assert message.count(": refused") == status.MAX_PROBLEMS_SHOWN
    assert message.endswith("; and 2 more")


def test_scaling_active_goes_away_with_the_autoscaler_but_not_with_a_bad_spec() -> None:
    on = status.build(scaled(), None)
    assert status.condition(on, "ScalingActive") is not None
    later = NOW + timedelta(seconds=10)
    bad = status.build(status.Observation("orders", 4, later, spec_error=SpecError("spec.topic", "x")), on)
    assert conditions(bad)["ScalingActive"] == ("True", "BacklogPerNsqd"), "what we last knew"
    off = status.build(observe(now=later, ready=ready_for(A, B)), on)
    assert status.condition(off, "ScalingActive") is None
    assert "ScalingActive" not in conditions(off)
    paused = status.build(observe(now=later, paused=True, replicas=0), on)  # paused: no scaling given
    assert status.condition(paused, "ScalingActive") is None
    assert status.needs_write(on, off)


def test_scaling_active_transition_time_moves_only_when_it_flips() -> None:
    first = status.build(scaled(), None)
    later = NOW + timedelta(minutes=1)
    same = status.build(scaled(now=later, scaling={A: STEADY, B: HOT}), first)
    assert status.condition(same, "ScalingActive")["lastTransitionTime"] == "2025-01-01T12:00:00Z"  # type: ignore[index]
    blind = status.build(scaled(now=later, scaling={A: HOT, B: BLIND}), first)
    assert status.condition(blind, "ScalingActive")["lastTransitionTime"] == "2025-01-01T12:01:00Z"  # type: ignore[index]


def test_backlog_figures_alone_are_no_news_but_are_figures() -> None:
    first = status.build(scaled(), None)
    moved = status.NsqdScaling(depth=9000, in_flight=200, current=1, desired=2, reason=HOT.reason)
    busier = status.build(scaled(now=NOW + timedelta(seconds=5), scaling={A: moved, B: STEADY}), first)
    assert not status.needs_write(first, busier)
    assert status.figures_changed(first, busier)
    for depth, in_flight in ((1200, 31), (1201, 30)):  # either figure alone
        one = status.NsqdScaling(depth=depth, in_flight=in_flight, current=1, desired=2, reason=HOT.reason)
        nudged = status.build(scaled(scaling={A: one, B: STEADY}), first)
        assert status.figures_changed(first, nudged), (depth, in_flight)
        assert not status.needs_write(first, nudged), (depth, in_flight)
    again = status.build(scaled(now=NOW + timedelta(seconds=10)), first)
    assert not status.needs_write(first, again)
    assert not status.figures_changed(first, again)


def test_a_decision_is_news() -> None:
    first = status.build(scaled(), None)
    wants_more = status.NsqdScaling(depth=1200, in_flight=30, current=1, desired=3, reason=HOT.reason)
    assert status.needs_write(first, status.build(scaled(scaling={A: wants_more, B: STEADY}), first))
    scaled_up = status.NsqdScaling(depth=1200, in_flight=30, current=2, desired=2, reason=HOT.reason)
    assert status.needs_write(first, status.build(scaled(scaling={A: scaled_up, B: STEADY}), first))
    new_words = status.NsqdScaling(depth=1200, in_flight=30, current=1, desired=2, reason="capped at 2")
    assert status.needs_write(first, status.build(scaled(scaling={A: new_words, B: STEADY}), first))
    went_blind = status.build(scaled(scaling={A: HOT, B: BLIND}), first)
    assert status.needs_write(first, went_blind)


def test_figures_changed_edges() -> None:
    first = status.build(scaled(), None)
    assert status.figures_changed(None, first)
    assert not status.figures_changed(None, {"conditions": []})
    assert not status.figures_changed(first, dict(first))
    fewer = dict(first, nsqds=first["nsqds"][:1])
    assert status.figures_changed(first, fewer), "an nsqd whose figures went away"


def test_the_crd_keeps_every_status_field_the_operator_writes() -> None:
    """The API server prunes fields its schema does not list: each one the status builder writes is there."""
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    built = status.build(scaled(scaling={A: HOT, B: BLIND}, problems={A: "ErrImagePull"}), None)
    assert set(built) <= set(schema)
    entry_fields = set(schema["nsqds"]["items"]["properties"])
    for entry in built["nsqds"]:
        assert set(entry) <= entry_fields, set(entry) - entry_fields
    assert {"depth", "inFlight", "replicas", "desiredReplicas", "scaleReason", "missingSince"} <= {
        key for entry in built["nsqds"] for key in entry
    }
    for condition in built["conditions"]:
        assert set(condition) <= set(schema["conditions"]["items"]["properties"])


def test_unreadable_stats_events_on_transitions_only() -> None:
    started = events.for_unreadable_stats({}, {A: "connection refused"})
    assert started == [
        events.Event(
            events.WARNING, "NsqdStatsUnreadable", f"Holding the replicas of nsqd {A}: connection refused"
        )
    ]
    assert events.for_unreadable_stats({A: "connection refused"}, {A: "no answer within 2 s"}) == []
    assert events.for_unreadable_stats({A: "connection refused"}, {A: "connection refused"}) == []
    recovered = events.for_unreadable_stats({A: "connection refused"}, {})
    assert recovered == [
        events.Event(
            events.NORMAL, "NsqdStatsReadable", f"Stats of nsqd {A} are readable again; scaling resumes"
        )
    ]
    swapped = events.for_unreadable_stats({A: "x"}, {B: "y"})
    assert [(e.type, e.reason, B in e.message or A in e.message) for e in swapped] == [
        (events.WARNING, "NsqdStatsUnreadable", True),
        (events.NORMAL, "NsqdStatsReadable", True),
    ]
    assert B in swapped[0].message
    assert A in swapped[1].message
    assert events.for_unreadable_stats({}, {}) == []


def test_scale_events_say_why() -> None:
    why = "backlog 2500 (depth 2500 + in flight 0) at 1000 per replica wants 3: up from 1"
    event = events.for_action(Scale("w", A, 3, why), None)
    assert event == events.Event(
        events.NORMAL, "DeploymentScaled", f"Scaled Deployment w for nsqd {A} to 3 replica(s): {why}"
    )
    plain = events.for_action(Scale("w", A, 0), None)
    assert plain.message == f"Scaled Deployment w for nsqd {A} to 0 replica(s)"
    autoscaled = events.for_action(Create("w", A, None), None)
    assert autoscaled.message == f"Created Deployment w for nsqd {A} with its autoscaler's replicas"
