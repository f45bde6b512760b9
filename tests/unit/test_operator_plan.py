"""The planner: one worker per nsqd that lookupd lists, with a grace period and no deletions in the dark."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsq_operator.plan import (
    UPDATE_CHANGED,
    UPDATE_DRIFTED,
    Create,
    Delete,
    NsqdRecord,
    Plan,
    Scale,
    Target,
    Update,
    Worker,
    plan,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=300)
A, B, C = "10.0.0.1:4150", "10.0.0.2:4150", "10.0.0.3:4150"


def name(address: str) -> str:
    return f"c-{address.replace('.', '-').replace(':', '-')}"


def target(replicas: int | None = 1, fingerprint: str = "fp1") -> Target:
    return Target(name=name, fingerprint=lambda _address: fingerprint, replicas=replicas)


def worker(address: str, fingerprint: str = "fp1", replicas: int = 1) -> Worker:
    return Worker(name(address), address, fingerprint, replicas)


def run(
    producers: Iterable[str] | None,
    workers: Iterable[Worker] = (),
    records: Iterable[NsqdRecord] = (),
    now: datetime = NOW,
    **target_args: object,
) -> Plan:
    return plan(
        None if producers is None else frozenset(producers),
        workers,
        {r.address: r for r in records},
        target(**target_args),  # type: ignore[arg-type]
        now,
        GRACE,
    )


def test_a_new_nsqd_gets_a_worker() -> None:
    result = run([A, B], [worker(A)])
    assert result.actions == (Create(name(B), B, 1),)
    assert [r.address for r in result.nsqds] == [A, B]
    assert all(r.last_seen == NOW and r.missing_since is None for r in result.nsqds)


def test_nothing_to_do_when_every_nsqd_has_its_worker() -> None:
    assert run([A, B], [worker(A), worker(B)]).actions == ()


def test_a_drifted_worker_is_rewritten_and_says_why() -> None:
    drifted = Worker(name(A), A, "fp1", 1, drifted=True)
    assert run([A], [drifted]).actions == (Update(name(A), A, 1, UPDATE_DRIFTED),)
    assert run([A], [worker(A, fingerprint="old")]).actions == (Update(name(A), A, 1, UPDATE_CHANGED),)


def test_replicas_owned_by_an_autoscaler_are_never_planned() -> None:
    """With `replicas=None` the count is someone else's: no Scale, and creates carry no count."""
    scaled = Worker(name(A), A, "fp1", 7)
    assert run([A, B], [scaled], replicas=None).actions == (Create(name(B), B, None),)
    drifted = Worker(name(A), A, "fp1", 7, drifted=True)
    assert run([A], [drifted], replicas=None).actions == (Update(name(A), A, None, UPDATE_DRIFTED),)


def test_no_producers_and_no_workers_is_a_quiet_plan() -> None:
    result = run([])
    assert result.actions == ()
    assert result.nsqds == ()


def test_a_missing_nsqd_keeps_its_worker_and_starts_the_grace_clock() -> None:
    result = run([A], [worker(A), worker(B)], [NsqdRecord(B, last_seen=NOW - timedelta(seconds=10))])
    assert result.actions == ()
    assert result.nsqds[1] == NsqdRecord(B, last_seen=NOW - timedelta(seconds=10), missing_since=NOW)


def test_a_missing_nsqd_keeps_its_worker_for_the_whole_grace() -> None:
    since = NOW - GRACE + timedelta(seconds=1)
    result = run([A], [worker(A), worker(B)], [NsqdRecord(B, missing_since=since)])
    assert result.actions == ()
    assert result.nsqds[1].missing_since == since


def test_after_the_grace_the_worker_is_deleted() -> None:
    result = run([A], [worker(A), worker(B)], [NsqdRecord(B, missing_since=NOW - GRACE)])
    assert result.actions == (Delete(name(B), B, "nsqd no longer listed by lookupd"),)
    assert [r.address for r in result.nsqds] == [A]


def test_zero_grace_deletes_at_once() -> None:
    result = plan(frozenset([A]), [worker(A), worker(B)], {}, target(), NOW, timedelta(0))
    assert [type(a) for a in result.actions] == [Delete]


def test_an_nsqd_that_returns_within_the_grace_changes_nothing() -> None:
    result = run([A, B], [worker(A), worker(B)], [NsqdRecord(B, missing_since=NOW - timedelta(seconds=60))])
    assert result.actions == ()
    assert result.nsqds[1] == NsqdRecord(B, last_seen=NOW)


def test_unreachable_lookupd_never_deletes_and_freezes_the_clocks() -> None:
    overdue = NsqdRecord(B, missing_since=NOW - 10 * GRACE)
    result = run(None, [worker(A), worker(B)], [NsqdRecord(A, last_seen=NOW - timedelta(seconds=5)), overdue])
    assert result.actions == ()
    assert result.nsqds == (NsqdRecord(A, last_seen=NOW - timedelta(seconds=5)), overdue)
    assert result.deletions_held == (name(B),)


def test_unreachable_lookupd_does_not_start_a_grace_clock() -> None:
    result = run(None, [worker(A)])
    assert result.nsqds == (NsqdRecord(A),)
    assert result.deletions_held == ()


def test_unreachable_lookupd_keeps_strays_too() -> None:
    stray = Worker("old-name", A, "fp1", 1)
    result = run(None, [stray])
    assert all(not isinstance(a, Delete) for a in result.actions)
    assert result.deletions_held == ("old-name",)


def test_unreachable_lookupd_still_applies_a_spec_change_and_pause() -> None:
    result = run(None, [worker(A, fingerprint="old"), worker(B)], replicas=0)
    assert result.actions == (Update(name(A), A, 0), Scale(name(B), B, 0))


def test_partial_lookupd_failure_plans_on_the_union_of_those_that_answered() -> None:
    # The caller passes the union of the lookupds that answered; an nsqd only the dead one knew
    # about is missing, so it gets the grace period, not an immediate deletion.
    result = run([A], [worker(A), worker(B)])
    assert result.actions == ()
    assert result.nsqds[1].missing_since == NOW


def test_paused_scales_every_worker_to_zero() -> None:
    result = run([A, B], [worker(A), worker(B)], replicas=0)
    assert result.actions == (Scale(name(A), A, 0), Scale(name(B), B, 0))


def test_paused_creates_new_workers_at_zero() -> None:
    assert run([A], replicas=0).actions == (Create(name(A), A, 0),)


def test_resuming_scales_back_up() -> None:
    assert run([A], [worker(A, replicas=0)], replicas=1).actions == (Scale(name(A), A, 1),)


def test_a_spec_change_updates_only_when_the_fingerprint_differs() -> None:
    assert run([A], [worker(A, fingerprint="fp1")], fingerprint="fp1").actions == ()
    assert run([A], [worker(A, fingerprint="fp1")], fingerprint="fp2").actions == (Update(name(A), A, 1),)


def test_an_update_also_sets_the_replicas() -> None:
    assert run([A], [worker(A, fingerprint="x", replicas=3)], replicas=1).actions == (Update(name(A), A, 1),)


def test_a_worker_without_an_address_or_under_another_name_is_removed() -> None:
    nameless = Worker("nameless", None, "fp1", 1)
    renamed = Worker("renamed", A, "fp1", 1)
    result = run([A], [nameless, renamed])
    assert Create(name(A), A, 1) in result.actions
    deleted = {a.name for a in result.actions if isinstance(a, Delete)}
    assert deleted == {"nameless", "renamed"}


def test_a_missing_nsqd_with_no_worker_is_forgotten() -> None:
    result = run([A], [worker(A)], [NsqdRecord(C, missing_since=NOW - timedelta(seconds=1))])
    assert [r.address for r in result.nsqds] == [A]


def test_after_a_restart_without_records_the_grace_starts_now() -> None:
    result = run([A], [worker(A), worker(B)], records=[])
    assert result.actions == ()
    assert result.nsqds[1].missing_since == NOW


def test_the_grace_clock_runs_across_polls() -> None:
    first = run([A], [worker(A), worker(B)])
    records = {r.address: r for r in first.nsqds}
    later = plan(frozenset([A]), [worker(A), worker(B)], records, target(), NOW + GRACE, GRACE)
    assert [type(a) for a in later.actions] == [Delete]


@given(
    producers=st.one_of(st.none(), st.frozensets(st.sampled_from([A, B, C]))),
    existing=st.frozensets(st.sampled_from([A, B, C])),
    missing_for=st.dictionaries(st.sampled_from([A, B, C]), st.integers(0, 1000)),
    replicas=st.integers(0, 3),
)
def test_planning_is_idempotent_and_safe(
    producers: frozenset[str] | None, existing: frozenset[str], missing_for: dict[str, int], replicas: int
) -> None:
    records = {a: NsqdRecord(a, missing_since=NOW - timedelta(seconds=s)) for a, s in missing_for.items()}
    workers = [worker(a) for a in existing]
    first = plan(producers, workers, records, target(replicas), NOW, GRACE)
    if producers is None:
        assert not any(isinstance(a, Delete) for a in first.actions)
    for address in producers or ():
        assert address in {r.address for r in first.nsqds}  # every listed nsqd keeps or gets a worker
    assert len({a.name for a in first.actions}) == len(first.actions)  # one action per worker at most

    # Apply the plan, then plan again: nothing is left to do.
    after = {w.address: w for w in workers}
    for action in first.actions:
        if isinstance(action, Delete):
            after.pop(action.address)
        else:
            after[action.address] = Worker(action.name, action.address, "fp1", action.replicas or 0)
    again = plan(producers, after.values(), {r.address: r for r in first.nsqds}, target(replicas), NOW, GRACE)
    assert again.actions == ()


@pytest.mark.parametrize("grace_seconds", [0, 1, 300])
def test_deletion_happens_exactly_when_the_grace_is_over(grace_seconds: int) -> None:
    grace = timedelta(seconds=grace_seconds)
    since = NOW - grace
    records = {B: NsqdRecord(B, missing_since=since)}
    just_before = plan(frozenset(), [worker(B)], records, target(), NOW - timedelta(microseconds=1), grace)
    at = plan(frozenset(), [worker(B)], records, target(), NOW, grace)
    assert just_before.actions == ()
    assert [type(a) for a in at.actions] == [Delete]
