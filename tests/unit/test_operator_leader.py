"""The pure half of leader election: what a candidate does with the Lease it read (client-go's semantics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsq_operator.leader import (
    JITTER_FACTOR,
    MIN_WAIT,
    Action,
    LeaderElection,
    LeaseView,
    decide,
    expires_at,
    format_time,
    jittered,
    parse_time,
    released_spec,
)

NOW = datetime(2026, 12, 2, 1, 2, 3, 123456, tzinfo=UTC)
ME, OTHER = "operator-a", "operator-b"
DURATION, RETRY = 15.0, 2.0


def held(holder: str | None = OTHER, renewed_ago: float = 1.0, **fields: object) -> LeaseView:
    """A Lease renewed `renewed_ago` seconds before NOW, lasting 15 s, unless `fields` say otherwise."""
    values: dict[str, object] = {
        "holder": holder,
        "acquire_time": NOW - timedelta(seconds=100),
        "renew_time": NOW - timedelta(seconds=renewed_ago),
        "duration": DURATION,
        "transitions": 4,
    }
    values.update(fields)
    return LeaseView(**values)  # type: ignore[arg-type]


# --- no Lease, free Lease, expired Lease: acquire ------------------------------------------------


def test_no_lease_is_created_with_us_as_holder_and_zero_transitions() -> None:
    decision = decide(None, ME, NOW, lease_duration=DURATION, retry_period=RETRY)
    assert decision.action is Action.ACQUIRE
    assert decision.holder == ME
    assert decision.wait == RETRY
    assert decision.spec == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-12-02T01:02:03.123456Z",
        "renewTime": "2026-12-02T01:02:03.123456Z",
        "leaseTransitions": 0,
    }


@pytest.mark.parametrize("holder", [None, ""])
def test_a_lease_without_holder_is_free_even_when_freshly_renewed(holder: str | None) -> None:
    decision = decide(held(holder, renewed_ago=0.0), ME, NOW)
    assert decision.action is Action.ACQUIRE
    assert decision.spec is not None
    assert decision.spec["holderIdentity"] == ME
    assert decision.spec["leaseTransitions"] == 5  # a released lease changing hands is a transition


def test_an_expired_lease_of_another_holder_is_taken_over() -> None:
    decision = decide(held(OTHER, renewed_ago=15.001), ME, NOW)
    assert decision.action is Action.ACQUIRE
    assert decision.holder == ME
    assert decision.spec is not None
    assert decision.spec["acquireTime"] == decision.spec["renewTime"] == format_time(NOW)
    assert decision.spec["leaseTransitions"] == 5


def test_a_lease_is_still_held_at_exactly_its_expiry() -> None:
    """Free means renewTime + leaseDurationSeconds < now: strictly before."""
    assert decide(held(OTHER, renewed_ago=15.0), ME, NOW).action is Action.STANDBY
    assert decide(held(OTHER, renewed_ago=15.000001), ME, NOW).action is Action.ACQUIRE


def test_the_lease_own_duration_decides_not_ours() -> None:
    short = held(OTHER, renewed_ago=6.0, duration=5.0)
    long = held(OTHER, renewed_ago=20.0, duration=60.0)
    assert decide(short, ME, NOW, lease_duration=DURATION).action is Action.ACQUIRE
    assert decide(long, ME, NOW, lease_duration=DURATION).action is Action.STANDBY


# --- held by us: renew --------------------------------------------------------------------------


@pytest.mark.parametrize("renewed_ago", [0.0, 1.0, 14.0, 100.0])
def test_our_own_lease_is_renewed_keeping_acquire_time_and_transitions(renewed_ago: float) -> None:
    lease = held(ME, renewed_ago=renewed_ago)
    decision = decide(lease, ME, NOW, lease_duration=DURATION, retry_period=RETRY)
    assert decision.action is Action.RENEW
    assert decision.wait == RETRY
    assert decision.spec == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "acquireTime": format_time(NOW - timedelta(seconds=100)),
        "renewTime": format_time(NOW),
        "leaseTransitions": 4,
    }


def test_renewing_a_lease_without_acquire_time_fills_it_in() -> None:
    decision = decide(held(ME, acquire_time=None), ME, NOW)
    assert decision.action is Action.RENEW
    assert decision.spec is not None
    assert decision.spec["acquireTime"] == format_time(NOW)


def test_we_write_our_own_duration_rounded_up_to_whole_seconds() -> None:
    for duration, written in [(15.0, 15), (2.5, 3), (0.2, 1)]:
        spec = decide(None, ME, NOW, lease_duration=duration).spec
        assert spec is not None
        assert spec["leaseDurationSeconds"] == written


# --- held by another and fresh: stand by --------------------------------------------------------


def test_a_fresh_lease_of_another_holder_makes_us_wait() -> None:
    decision = decide(held(OTHER, renewed_ago=1.0), ME, NOW, retry_period=RETRY, jitter=0.0)
    assert decision.action is Action.STANDBY
    assert decision.holder == OTHER
    assert decision.spec is None
    assert decision.wait == RETRY


def test_the_standby_wait_is_jittered_by_client_go_factor() -> None:
    decision = decide(held(OTHER, renewed_ago=0.0), ME, NOW, retry_period=RETRY, jitter=0.5)
    assert decision.wait == pytest.approx(RETRY * (1 + JITTER_FACTOR * 0.5))
    assert jittered(RETRY, 0.999) < RETRY * (1 + JITTER_FACTOR)


def test_a_standby_never_waits_past_the_holders_expiry() -> None:
    decision = decide(held(OTHER, renewed_ago=14.5), ME, NOW, retry_period=RETRY, jitter=0.9)
    assert decision.action is Action.STANDBY
    assert decision.wait == pytest.approx(0.5)


def test_a_standby_at_the_edge_of_expiry_still_waits_a_little() -> None:
    assert decide(held(OTHER, renewed_ago=15.0), ME, NOW).wait == MIN_WAIT


def test_a_renew_time_in_the_future_clock_skew_is_held() -> None:
    decision = decide(held(OTHER, renewed_ago=-30.0), ME, NOW, retry_period=RETRY)
    assert decision.action is Action.STANDBY
    assert decision.wait == RETRY


# --- missing and malformed fields ---------------------------------------------------------------


def test_a_holder_without_any_time_is_free() -> None:
    assert decide(held(OTHER, renew_time=None, acquire_time=None), ME, NOW).action is Action.ACQUIRE


def test_a_holder_without_renew_time_is_judged_by_acquire_time() -> None:
    fresh = held(OTHER, renew_time=None, acquire_time=NOW - timedelta(seconds=1))
    stale = held(OTHER, renew_time=None, acquire_time=NOW - timedelta(seconds=16))
    assert decide(fresh, ME, NOW).action is Action.STANDBY
    assert decide(stale, ME, NOW).action is Action.ACQUIRE


def test_a_lease_without_duration_is_judged_by_ours() -> None:
    lease = held(OTHER, renewed_ago=10.0, duration=None)
    assert decide(lease, ME, NOW, lease_duration=15.0).action is Action.STANDBY
    assert decide(lease, ME, NOW, lease_duration=5.0).action is Action.ACQUIRE
    assert expires_at(lease, 15.0) == NOW + timedelta(seconds=5)


def test_from_lease_reads_a_complete_lease() -> None:
    lease = {
        "metadata": {"name": "nsq-operator", "resourceVersion": "42"},
        "spec": {
            "holderIdentity": OTHER,
            "acquireTime": "2026-12-02T01:00:00.000000Z",
            "renewTime": "2026-12-02T01:02:03.123456Z",
            "leaseDurationSeconds": 15,
            "leaseTransitions": 3,
        },
    }
    assert LeaseView.from_lease(lease) == LeaseView(
        holder=OTHER,
        acquire_time=datetime(2026, 12, 2, 1, 0, tzinfo=UTC),
        renew_time=NOW,
        duration=15.0,
        transitions=3,
    )


@pytest.mark.parametrize(
    "spec",
    [
        None,
        {},
        {"holderIdentity": "", "renewTime": "", "leaseDurationSeconds": None, "leaseTransitions": None},
        {
            "holderIdentity": 7,
            "renewTime": "yesterday",
            "leaseDurationSeconds": "15",
            "leaseTransitions": "3",
        },
        {"holderIdentity": None, "acquireTime": 12, "leaseDurationSeconds": True, "leaseTransitions": True},
    ],
)
def test_from_lease_treats_missing_or_malformed_fields_as_absent(spec: dict[str, object] | None) -> None:
    view = LeaseView.from_lease({"metadata": {}, "spec": spec})
    assert view == LeaseView()
    decision = decide(view, ME, NOW)
    assert decision.action is Action.ACQUIRE
    assert decision.spec is not None
    assert decision.spec["leaseTransitions"] == 1


def test_from_lease_without_spec_at_all() -> None:
    assert LeaseView.from_lease({"metadata": {"name": "x"}}) == LeaseView()


# --- transitions -------------------------------------------------------------------------------


def test_transitions_count_changes_of_holder_only() -> None:
    """Create, renew twice, lose to another, get it back after a release: 0, 0, 0, 1, 2."""
    history = []
    lease: LeaseView | None = None
    moments = [NOW + timedelta(seconds=s) for s in (0, 2, 4, 30, 31)]
    who = [ME, ME, ME, OTHER, ME]
    for index, (moment, identity) in enumerate(zip(moments, who, strict=True)):
        if index == 4:  # OTHER released it a moment ago
            lease = LeaseView.from_lease({"spec": released_spec(lease or LeaseView(), moment)})
        decision = decide(lease, identity, moment)
        assert decision.action in (Action.ACQUIRE, Action.RENEW), (index, decision)
        lease = LeaseView.from_lease({"spec": decision.spec})
        history.append((lease.holder, lease.transitions))
    assert history == [(ME, 0), (ME, 0), (ME, 0), (OTHER, 1), (ME, 2)]


def test_released_spec_frees_the_lease_at_once_and_keeps_the_count() -> None:
    spec = released_spec(held(ME, transitions=7), NOW)
    assert spec["holderIdentity"] is None
    assert spec["leaseTransitions"] == 7
    view = LeaseView.from_lease({"spec": spec})
    assert expires_at(view) is None
    assert decide(view, OTHER, NOW).action is Action.ACQUIRE


# --- times -------------------------------------------------------------------------------------


def test_format_time_is_rfc3339_micro_time_in_utc() -> None:
    assert format_time(NOW) == "2026-12-02T01:02:03.123456Z"
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert format_time(plus_two) == "2026-12-02T01:02:03.123456Z"
    assert format_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-02T01:02:03.123456Z", NOW),
        ("2026-12-02T01:02:03Z", NOW.replace(microsecond=0)),
        ("2026-12-02T03:02:03.123456+02:00", NOW),
        ("2026-12-02T01:02:03.123456", NOW),  # naive: read as UTC
        ("2026-12-02T01:02:03.123456789Z", NOW),  # nanoseconds: truncated
        ("", None),
        ("not a time", None),
        (None, None),
        (1700000000, None),
    ],
)
def test_parse_time(text: object, expected: datetime | None) -> None:
    assert parse_time(text) == expected


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_then_parse_is_the_identity(moment: datetime) -> None:
    assert parse_time(format_time(moment)) == moment


@given(
    holder=st.one_of(st.none(), st.sampled_from(["", ME, OTHER])),
    renewed_ago=st.floats(min_value=-100, max_value=100, allow_nan=False),
    duration=st.one_of(st.none(), st.floats(min_value=0, max_value=60, allow_nan=False)),
    transitions=st.integers(min_value=0, max_value=10**6),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_decide_invariants(
    holder: str | None, renewed_ago: float, duration: float | None, transitions: int, jitter: float
) -> None:
    lease = held(holder, renewed_ago=renewed_ago, duration=duration, transitions=transitions)
    decision = decide(lease, ME, NOW, lease_duration=DURATION, retry_period=RETRY, jitter=jitter)
    expiry = expires_at(lease, DURATION)
    if holder == ME:
        assert decision.action is Action.RENEW
    elif holder and expiry is not None and expiry >= NOW:
        assert decision.action is Action.STANDBY
        assert decision.holder == holder
        assert MIN_WAIT <= decision.wait <= RETRY * (1 + JITTER_FACTOR)
        assert decision.wait <= max(MIN_WAIT, (expiry - NOW).total_seconds())
    else:
        assert decision.action is Action.ACQUIRE
    if decision.action is not Action.STANDBY:
        assert decision.spec is not None
        assert decision.spec["holderIdentity"] == ME
        assert decision.spec["renewTime"] == format_time(NOW)
        expected = transitions if decision.action is Action.RENEW else transitions + 1
        assert decision.spec["leaseTransitions"] == expected
        assert decision.wait == RETRY


# --- the elector's settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "timing", "complaint"),
    [
        ("", {}, "identity"),
        (ME, {"retry_period": 0.0}, "retry_period"),
        (ME, {"renew_deadline": 2.0, "retry_period": 2.0}, "renew_deadline"),
        (ME, {"lease_duration": 10.0, "renew_deadline": 10.0}, "lease_duration"),
    ],
)
def test_the_elector_refuses_timings_that_break_fencing(
    identity: str, timing: dict[str, float], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        LeaderElection(None, "ns", "lease", identity, **timing)  # type: ignore[arg-type]


def test_a_new_elector_is_not_the_leader() -> None:
    elector = LeaderElection(None, "ns", "lease", ME)  # type: ignore[arg-type]
    assert elector.is_leader is False
