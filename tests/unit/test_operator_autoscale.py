"""The per-nsqd autoscaler (`autoscale.decide`, `autoscale.feedable`): exact examples, then properties.

The properties drive `decide` the way the operator does: each decision's replicas and history are fed
into the next one, over time series of backlogs (bursts, quiet spells, restarts, unreadable stats).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nsq_operator import events
from nsq_operator.autoscale import (
    AutoscalingSpec,
    ChannelStats,
    Decision,
    NsqdStats,
    Recommendation,
    Unreadable,
    decide,
    feedable,
)
from nsq_operator.plan import Scale, Target, Worker, plan

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_000_000.0  # a monotonic clock reading, in seconds
WIDE = 1000  # a ceiling that caps nothing
DEFAULTS = AutoscalingSpec()


def backlog(
    depth: int, in_flight: int = 0, *, deferred: int = 0, paused: bool = False, channel_exists: bool = True
) -> ChannelStats:
    return ChannelStats(depth, in_flight, deferred=deferred, paused=paused, channel_exists=channel_exists)


IDLE = backlog(0)


def bounds(spec: AutoscalingSpec, ceiling: int) -> tuple[int, int]:
    """(bottom, top) as the brief for the autoscaler states them, written out independently."""
    top = max(1, min(spec.max_replicas, ceiling))
    return min(spec.min_replicas, top), top


def wish(spec: AutoscalingSpec, stats: ChannelStats, ceiling: int) -> int:
    """What one moment's backlog asks for, in integer arithmetic: clamp(ceil(backlog / target))."""
    bottom, top = bounds(spec, ceiling)
    load = 0 if stats.paused else stats.depth + stats.in_flight
    wanted = -(-load // spec.target_backlog_per_replica)
    recommendation = min(max(wanted, bottom), top)
    return 1 if recommendation == 0 and not stats.channel_exists else recommendation


def run(
    spec: AutoscalingSpec,
    polls: Iterable[tuple[float, NsqdStats]],
    current: int | None,
    ceiling: int = WIDE,
    history: tuple[Recommendation, ...] = (),
) -> list[Decision]:
    """Feed `decide` a time series the way the operator does: each decision is the next one's input."""
    decisions = []
    for now, stats in polls:
        decision = decide(spec, stats, current, history, now, ceiling)
        decisions.append(decision)
        current, history = decision.replicas, decision.history
    return decisions


# --- examples with exact numbers -----------------------------------------------------------------------


def test_a_large_backlog_is_capped_at_max() -> None:
    decision = decide(DEFAULTS, backlog(40_000), None, (), T0, WIDE)
    assert decision.replicas == 4
    assert "backlog 40000 (depth 40000 + in flight 0) at 1000 per replica wants 40" in decision.reason
    assert "capped at 4 (max)" in decision.reason
    assert set(decision.history) == {(T0, 4)}


def test_scale_up_is_limited_to_one_step_per_decision() -> None:
    spec = AutoscalingSpec(max_replicas=10, max_scale_up_step=4)
    first = decide(spec, backlog(40_000), 1, (), T0, WIDE)
    assert first.replicas == 5
    assert "up from 1 (at most 4 more a decision)" in first.reason
    second = decide(spec, backlog(40_000), first.replicas, first.history, T0 + 10, WIDE)
    assert second.replicas == 9
    third = decide(spec, backlog(40_000), second.replicas, second.history, T0 + 20, WIDE)
    assert third.replicas == 10
    assert "capped at 10 (max)" in third.reason


def test_a_step_that_reaches_the_wish_says_no_limit() -> None:
    decision = decide(AutoscalingSpec(max_replicas=10), backlog(2500), 1, (), T0, WIDE)
    assert decision.replicas == 3
    assert decision.reason.endswith(": up from 1")


@pytest.mark.parametrize(
    ("depth", "in_flight", "replicas"),
    [(0, 0, 1), (1, 0, 1), (1000, 0, 1), (1001, 0, 2), (999, 2, 2), (1500, 600, 3), (0, 3000, 3)],
)
def test_backlog_is_depth_plus_in_flight_over_the_target(depth: int, in_flight: int, replicas: int) -> None:
    assert decide(DEFAULTS, backlog(depth, in_flight), None, (), T0, WIDE).replicas == replicas


def test_deferred_messages_want_no_worker_yet() -> None:
    decision = decide(DEFAULTS, backlog(0, 0, deferred=50_000), None, (), T0, WIDE)
    assert decision.replicas == 1
    assert "raised to the minimum 1" in decision.reason


def test_a_paused_channel_has_no_backlog() -> None:
    decision = decide(DEFAULTS, backlog(9000, 50, paused=True), 1, (), T0, WIDE)
    assert decision.replicas == 1
    assert "channel paused (depth 9000), so no backlog: wants 0" in decision.reason


def test_the_ceiling_is_what_the_nsqd_can_feed() -> None:
    spec = AutoscalingSpec(max_replicas=10)
    ceiling = feedable(max_rdy_count=2500, max_in_flight=1000)
    assert ceiling == 2
    decision = decide(spec, backlog(40_000), None, (), T0, ceiling)
    assert decision.replicas == 2
    assert "capped at 2 (what the nsqd can feed)" in decision.reason


@pytest.mark.parametrize(
    ("max_rdy_count", "max_in_flight", "replicas"),
    [(2500, 200, 12), (2500, 2500, 1), (2500, 1, 2500), (2500, 1250, 2), (2500, 1251, 1), (100, 200, 1)],
)
def test_feedable(max_rdy_count: int, max_in_flight: int, replicas: int) -> None:
    assert feedable(max_rdy_count, max_in_flight) == replicas


def test_feedable_never_answers_zero_even_for_nonsense() -> None:
    assert feedable(0, 0) == feedable(0, 200) == feedable(-5, -5) == 1
    assert feedable(2500, 0) == 2500  # no division by zero: 0 in flight counts as 1


def test_unreadable_stats_hold_the_replicas() -> None:
    history = ((T0 - 10, 3),)
    decision = decide(DEFAULTS, Unreadable("connection refused"), 3, history, T0, WIDE)
    assert decision == Decision(3, "held at 3: connection refused", ())


def test_after_an_outage_the_window_restarts_when_stats_return() -> None:
    """One reading after an outage longer than the window is not enough to scale down on."""
    spec = AutoscalingSpec(max_replicas=10, scale_down_stabilization_seconds=300)
    polls: list[tuple[float, NsqdStats]] = [(T0, backlog(4000))]
    polls += [(T0 + t, Unreadable("refused")) for t in range(10, 400, 10)]
    polls += [(T0 + 410, IDLE), (T0 + 709, IDLE), (T0 + 710, IDLE)]
    decisions = run(spec, polls, 4)
    assert [d.replicas for d in decisions[:-1]] == [4] * (len(polls) - 1)
    assert decisions[-2].reason.endswith("; holding 4 for the 300 s window")
    assert decisions[-1].replicas == 1, "a window after the stats came back"


def test_unreadable_stats_without_a_deployment_start_at_the_minimum() -> None:
    assert decide(AutoscalingSpec(min_replicas=2), Unreadable("x"), None, (), T0, WIDE).replicas == 2
    assert decide(AutoscalingSpec(min_replicas=0), Unreadable("x"), None, (), T0, WIDE).replicas == 1


def test_scale_down_waits_for_the_window() -> None:
    spec = AutoscalingSpec(max_replicas=10, scale_down_stabilization_seconds=300)
    up = decide(spec, backlog(4000), 4, (), T0, WIDE)
    assert up.replicas == 4
    held = decide(spec, IDLE, 4, up.history, T0 + 299, WIDE)
    assert held.replicas == 4
    assert held.reason.endswith("; holding 4 for the 300 s window")
    down = decide(spec, IDLE, 4, held.history, T0 + 300, WIDE)
    assert down.replicas == 1
    assert down.reason.endswith(": down from 4 after 300 s")
    assert down.history == ((T0 + 299, 1), (T0 + 300, 1))


def test_scale_down_goes_to_the_highest_wish_of_the_window() -> None:
    history = ((T0 - 301, 9), (T0 - 200, 3), (T0 - 100, 2))
    decision = decide(AutoscalingSpec(max_replicas=10), IDLE, 4, history, T0, WIDE)
    assert decision.replicas == 3
    assert decision.history == ((T0 - 200, 3), (T0 - 100, 2), (T0, 1))


def test_a_restart_starts_the_window_from_the_current_replicas() -> None:
    decision = decide(DEFAULTS, IDLE, 4, (), T0, WIDE)
    assert decision.replicas == 4
    assert decision.history == ((T0, 4), (T0, 1))


def test_a_zero_window_scales_down_at_the_next_decision() -> None:
    spec = AutoscalingSpec(scale_down_stabilization_seconds=0)
    first = decide(spec, IDLE, 4, (), T0, WIDE)
    assert first.replicas == 4  # even a zero window does not scale down at once after a restart
    assert decide(spec, IDLE, 4, first.history, T0 + 1, WIDE).replicas == 1


def test_scale_to_zero_needs_the_channel() -> None:
    spec = AutoscalingSpec(min_replicas=0, scale_down_stabilization_seconds=60)
    old = ((T0 - 120, 1),)
    assert decide(spec, IDLE, 1, old, T0, WIDE).replicas == 0
    missing = decide(spec, backlog(0, channel_exists=False), 1, old, T0, WIDE)
    assert missing.replicas == 1
    assert "kept at 1 until the channel exists on the nsqd" in missing.reason
    woken = decide(spec, backlog(0, channel_exists=False), 0, old, T0, WIDE)
    assert woken.replicas == 1


def test_a_backlog_wakes_a_consumer_at_zero() -> None:
    spec = AutoscalingSpec(min_replicas=0)
    assert decide(spec, backlog(1), 0, ((T0 - 10, 0),), T0, WIDE).replicas == 1
    assert decide(spec, backlog(3500), 0, ((T0 - 10, 0),), T0, WIDE).replicas == 4


def test_lowered_limits_take_effect_at_once() -> None:
    recent_high = ((T0 - 10, 8),)
    spec = AutoscalingSpec(max_replicas=4)
    lowered = decide(spec, backlog(8000), 8, recent_high, T0, WIDE)
    assert lowered.replicas == 4
    assert "within max 4" in lowered.reason
    assert decide(spec, backlog(8000), 8, recent_high, T0, ceiling=2).replicas == 2
    raised_min = decide(AutoscalingSpec(min_replicas=3, max_replicas=4), IDLE, 1, (), T0, WIDE)
    assert raised_min.replicas == 3
    assert "within min 3" in raised_min.reason


def test_resuming_from_a_pause_goes_to_the_backlog_in_one_decision() -> None:
    """Paused means 0 replicas: with a backlog the first decision after it goes past the minimum."""
    spec = AutoscalingSpec(min_replicas=1, max_replicas=8, max_scale_up_step=4)
    resumed = decide(spec, backlog(6000), 0, (), T0, WIDE)
    assert resumed.replicas == 5  # from the minimum 1, at most 4 more
    assert "up from 0" in resumed.reason


def test_the_operators_decision_reaches_the_plan_and_the_event() -> None:
    """decide → Target.per_nsqd/why → plan's Scale (with the reason) → the DeploymentScaled event."""
    address = "10.0.0.1:4150"
    decision = decide(AutoscalingSpec(max_replicas=10), backlog(2500), 1, (), T0, WIDE)
    target = Target(
        name=lambda a: f"w-{a}",
        fingerprint=lambda _a: "fp",
        replicas=None,
        per_nsqd={address: decision.replicas},
        why={address: decision.reason},
    )
    now = datetime(2025, 1, 1, tzinfo=UTC)
    workers = [Worker(f"w-{address}", address, "fp", 1)]
    planned = plan(frozenset({address}), workers, {}, target, now, timedelta(seconds=300))
    assert planned.actions == (Scale(f"w-{address}", address, 3, decision.reason),)
    event = events.for_action(planned.actions[0], None)
    assert event.reason == "DeploymentScaled"
    assert (
        event.message
        == f"Scaled Deployment w-{address} for nsqd {address} to 3 replica(s): {decision.reason}"
    )
    # An nsqd the autoscaler did not decide for keeps Target.replicas (None: leave its count alone).
    assert target.replicas_for("10.0.0.9:4150") is None


# --- properties ---------------------------------------------------------------------------------------


@st.composite
def specs(draw: st.DrawFn, window: st.SearchStrategy[int] | None = None) -> AutoscalingSpec:
    maximum = draw(st.integers(1, 30))
    return AutoscalingSpec(
        min_replicas=draw(st.integers(0, maximum)),
        max_replicas=maximum,
        target_backlog_per_replica=draw(st.sampled_from([1, 7, 100, 1000]) | st.integers(1, 10**6)),
        scale_down_stabilization_seconds=draw(st.integers(0, 3600) if window is None else window),
        max_scale_up_step=draw(st.integers(1, 10)),
    )


channel_stats = st.builds(
    ChannelStats,
    depth=st.integers(0, 10**7),
    in_flight=st.integers(0, 10**5),
    deferred=st.integers(0, 10**5),
    paused=st.booleans(),
    channel_exists=st.booleans(),
)
quiet_stats = st.builds(
    ChannelStats,
    depth=st.just(0),
    in_flight=st.just(0),
    deferred=st.integers(0, 10**5),
    paused=st.booleans(),
    channel_exists=st.just(True),
)
unreadable = st.builds(Unreadable, st.text(min_size=1, max_size=40))
any_stats: st.SearchStrategy[NsqdStats] = channel_stats | unreadable
currents = st.none() | st.integers(0, 40)
ceilings = st.integers(1, 50) | st.just(WIDE)
histories = st.lists(st.tuples(st.floats(T0 - 7200, T0), st.integers(0, 40)), max_size=8).map(
    lambda entries: tuple(sorted(entries))
)


@PROPERTY
@given(spec=specs(), stats=any_stats, current=currents, history=histories, ceiling=ceilings)
def test_the_result_stays_within_the_limits(
    spec: AutoscalingSpec,
    stats: NsqdStats,
    current: int | None,
    history: tuple[Recommendation, ...],
    ceiling: int,
) -> None:
    bottom, top = bounds(spec, ceiling)
    decision = decide(spec, stats, current, history, T0, ceiling)
    assert decision.reason
    if isinstance(stats, Unreadable):
        assert decision.replicas == (current if current is not None else max(bottom, 1))
        assert decision.history == (), "the window restarts when numbers return"
        assert stats.reason in decision.reason
    else:
        assert bottom <= decision.replicas <= top
        assert decision.history[-1] == (T0, wish(spec, stats, ceiling))


@PROPERTY
@given(spec=specs(), stats=unreadable, current=st.integers(0, 40), history=histories, ceiling=ceilings)
def test_unreadable_stats_never_scale_down(
    spec: AutoscalingSpec, stats: Unreadable, current: int, history: tuple[Recommendation, ...], ceiling: int
) -> None:
    assert decide(spec, stats, current, history, T0, ceiling).replicas == current


@PROPERTY
@given(spec=specs(), stats=channel_stats, current=st.integers(0, 40), history=histories, ceiling=ceilings)
def test_scale_up_is_at_once_and_at_most_one_step(
    spec: AutoscalingSpec,
    stats: ChannelStats,
    current: int,
    history: tuple[Recommendation, ...],
    ceiling: int,
) -> None:
    bottom, top = bounds(spec, ceiling)
    decision = decide(spec, stats, current, history, T0, ceiling)
    wished = wish(spec, stats, ceiling)
    if bottom <= current <= top:
        assert decision.replicas - current <= spec.max_scale_up_step
        if wished > current:  # no waiting on the way up
            assert decision.replicas == min(wished, current + spec.max_scale_up_step)
        else:
            assert decision.replicas <= current
    elif current > top:  # the max was lowered under the Deployment: straight to it
        assert decision.replicas == top
    else:  # under a raised minimum (or resumed from a pause): from the minimum, one step at most
        assert decision.replicas == max(bottom, min(wished, bottom + spec.max_scale_up_step))


@PROPERTY
@given(spec=specs(), stats=channel_stats, current=st.integers(0, 40), history=histories, ceiling=ceilings)
def test_scale_down_only_to_the_highest_wish_of_the_window(
    spec: AutoscalingSpec,
    stats: ChannelStats,
    current: int,
    history: tuple[Recommendation, ...],
    ceiling: int,
) -> None:
    bottom, top = bounds(spec, ceiling)
    assume(bottom <= current <= top)
    decision = decide(spec, stats, current, history, T0, ceiling)
    window = spec.scale_down_stabilization_seconds
    recent = [r for t, r in history if T0 - t < window] if history else [current]
    floor = min(current, max([*recent, wish(spec, stats, ceiling)]))
    if decision.replicas < current:
        assert decision.replicas == floor
    assert decision.replicas >= floor
    assert all(T0 - t < window or t == T0 for t, _ in decision.history), "the history forgets old wishes"


@PROPERTY
@given(spec=specs(), stats=channel_stats, current=currents, history=histories, ceiling=ceilings)
def test_zero_only_when_the_channel_exists_and_is_empty(
    spec: AutoscalingSpec,
    stats: ChannelStats,
    current: int | None,
    history: tuple[Recommendation, ...],
    ceiling: int,
) -> None:
    replicas = decide(spec, stats, current, history, T0, ceiling).replicas
    if not stats.channel_exists:
        assert replicas >= 1
    if replicas == 0:
        assert stats.channel_exists
        assert stats.backlog == 0
        assert spec.min_replicas == 0


@PROPERTY
@given(spec=specs(), stats=channel_stats, current=currents, history=histories, ceiling=ceilings)
def test_a_paused_channel_counts_as_no_backlog(
    spec: AutoscalingSpec,
    stats: ChannelStats,
    current: int | None,
    history: tuple[Recommendation, ...],
    ceiling: int,
) -> None:
    paused = decide(spec, replace(stats, paused=True), current, history, T0, ceiling)
    empty = replace(stats, depth=0, in_flight=0, paused=False)
    unpaused = decide(spec, empty, current, history, T0, ceiling)
    assert (paused.replicas, paused.history) == (unpaused.replicas, unpaused.history)
    assert "channel paused" in paused.reason


@PROPERTY
@given(spec=specs(), stats=channel_stats, current=st.integers(0, 40), ceiling=ceilings)
def test_a_fresh_history_never_scales_down_at_once(
    spec: AutoscalingSpec, stats: ChannelStats, current: int, ceiling: int
) -> None:
    bottom, top = bounds(spec, ceiling)
    assume(bottom <= current <= top)
    assert decide(spec, stats, current, (), T0, ceiling).replicas >= current


@PROPERTY
@given(spec=specs(), stats=channel_stats, excess=st.integers(1, 20), history=histories, ceiling=ceilings)
def test_limits_lowered_below_the_replicas_take_effect_at_once(
    spec: AutoscalingSpec, stats: ChannelStats, excess: int, history: tuple[Recommendation, ...], ceiling: int
) -> None:
    _, top = bounds(spec, ceiling)
    decision = decide(spec, stats, top + excess, history, T0, ceiling)
    assert decision.replicas == top
    raised = replace(spec, min_replicas=spec.max_replicas)
    bottom, top = bounds(raised, ceiling)
    assert decide(raised, stats, bottom - 1, history, T0, ceiling).replicas == bottom


@PROPERTY
@given(max_rdy_count=st.integers(-10, 10**6), max_in_flight=st.integers(-10, 10**6))
def test_feedable_is_at_least_one_and_never_over_feeds(max_rdy_count: int, max_in_flight: int) -> None:
    replicas = feedable(max_rdy_count, max_in_flight)
    assert replicas >= 1
    if 1 <= max_in_flight <= max_rdy_count:
        assert replicas * max_in_flight <= max_rdy_count < (replicas + 1) * max_in_flight


# --- time series -----------------------------------------------------------------------------------------


def increasing(start: float, gaps: Sequence[float]) -> list[float]:
    times, now = [], start
    for gap in gaps:
        now += gap
        times.append(now)
    return times


@SERIES
@given(
    spec=specs(window=st.integers(1, 3600)),
    high=st.integers(1, 10**6),
    high_gaps=st.lists(st.floats(0.5, 60), min_size=1, max_size=10),
    quiet_gaps=st.lists(st.floats(0.5, 400), min_size=1, max_size=40),
    quiet=quiet_stats,
)
def test_no_scale_down_before_the_window_has_passed_since_the_backlog_fell(
    spec: AutoscalingSpec,
    high: int,
    high_gaps: list[float],
    quiet_gaps: list[float],
    quiet: ChannelStats,
) -> None:
    bottom, _ = bounds(spec, WIDE)
    loaded = backlog(high * spec.target_backlog_per_replica)
    assume(wish(spec, loaded, WIDE) > bottom)
    high_times = increasing(T0, high_gaps)
    quiet_times = increasing(high_times[-1], quiet_gaps)
    decisions = run(spec, [(t, loaded) for t in high_times] + [(t, quiet) for t in quiet_times], bottom)
    peak = decisions[len(high_times) - 1].replicas
    assert peak > bottom
    rising = [d.replicas for d in decisions[: len(high_times)]]
    assert rising == sorted(rising)
    last_high = high_times[-1]
    for now, decision in zip(quiet_times, decisions[len(high_times) :], strict=True):
        if now - last_high < spec.scale_down_stabilization_seconds:
            assert decision.replicas == peak, f"down {now - last_high:.1f} s after the backlog fell"
        else:
            assert decision.replicas == bottom, f"still {decision.replicas} {now - last_high:.1f} s after"


@SERIES
@given(
    spec=specs(window=st.integers(2, 3600)),
    high=st.integers(1, 10**6),
    bursts=st.lists(
        st.tuples(
            st.floats(0.01, 0.99),  # the gap to the next burst, as a share of the window
            st.lists(st.floats(0.01, 0.99), max_size=5),  # quiet polls in between, as shares of the gap
        ),
        min_size=1,
        max_size=20,
    ),
    quiet=quiet_stats,
    restart_after=st.none() | st.integers(0, 60),
)
def test_bursts_shorter_than_the_window_never_flap(
    spec: AutoscalingSpec,
    high: int,
    bursts: list[tuple[float, list[float]]],
    quiet: ChannelStats,
    restart_after: int | None,
) -> None:
    """A backlog that comes back within the window keeps the replicas: they only ever go up."""
    bottom, _ = bounds(spec, WIDE)
    loaded = backlog(high * spec.target_backlog_per_replica)
    assume(wish(spec, loaded, WIDE) > bottom)
    window = spec.scale_down_stabilization_seconds
    polls: list[tuple[float, NsqdStats]] = [(T0, loaded)]
    for share, quiet_shares in bursts:
        start, gap = polls[-1][0], share * window
        polls += [(start + q * gap, quiet) for q in sorted(set(quiet_shares))]
        polls.append((start + gap, loaded))
    decisions: list[Decision] = []
    current: int | None = bottom
    history: tuple[Recommendation, ...] = ()
    for i, (now, stats) in enumerate(polls):
        if restart_after is not None and i == restart_after:
            history = ()  # the operator restarted: it remembers nothing but the Deployment's replicas
        decision = decide(spec, stats, current, history, now, WIDE)
        decisions.append(decision)
        current, history = decision.replicas, decision.history
    replicas = [d.replicas for d in decisions]
    assert replicas[0] > bottom
    assert replicas == sorted(replicas), f"flapped: {replicas}"


@SERIES
@given(
    spec=specs(window=st.integers(1, 3600)),
    current=st.integers(1, 30),
    gaps=st.lists(st.floats(0.5, 600), min_size=1, max_size=30),
    quiet=quiet_stats,
)
def test_after_a_restart_the_window_starts_afresh(
    spec: AutoscalingSpec, current: int, gaps: list[float], quiet: ChannelStats
) -> None:
    bottom, top = bounds(spec, WIDE)
    assume(bottom < current <= top)
    times = [T0, *increasing(T0, gaps)]
    decisions = run(spec, [(t, quiet) for t in times], current)
    for now, decision in zip(times, decisions, strict=True):
        expected = current if now - T0 < spec.scale_down_stabilization_seconds else bottom
        assert decision.replicas == expected, f"{decision.replicas} at {now - T0:.1f} s after the restart"


@SERIES
@given(
    spec=specs(),
    polls=st.lists(st.tuples(st.floats(0.5, 900), any_stats), min_size=1, max_size=40),
    current=currents,
    ceiling=ceilings,
)
def test_any_series_keeps_every_promise(
    spec: AutoscalingSpec, polls: list[tuple[float, NsqdStats]], current: int | None, ceiling: int
) -> None:
    """Random series, mixing readable and unreadable polls: the per-decision promises hold at each step."""
    bottom, top = bounds(spec, ceiling)
    times = increasing(T0, [gap for gap, _ in polls])
    history: tuple[Recommendation, ...] = ()
    for now, (_, stats) in zip(times, polls, strict=True):
        decision = decide(spec, stats, current, history, now, ceiling)
        if isinstance(stats, Unreadable):
            assert decision.replicas == (current if current is not None else max(bottom, 1))
        else:
            assert bottom <= decision.replicas <= top
            if current is not None and bottom <= current:
                assert decision.replicas - current <= spec.max_scale_up_step
            if decision.replicas == 0:
                assert stats.channel_exists
            if not history and current is not None and bottom <= current <= top:
                assert decision.replicas >= current, "no scale-down on the first reading after a gap"
        assert len(decision.history) <= len(history) + 2
        current, history = decision.replicas, decision.history


def test_backlog_of_a_channel_stats() -> None:
    assert backlog(5, 3, deferred=100).backlog == 8
    assert backlog(5, 3, paused=True).backlog == 0
