"""Requeue delays grow and stop at the cap; the consumer pause steps in and out like go-nsq's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsq_worker.backoff import (
    MAX_REQUEUE_DELAY,
    Action,
    BackoffState,
    ReconnectBackoff,
    pause_seconds,
    reconnect_delay,
    requeue_delay,
)


def test_requeue_delay_doubles_per_attempt_up_to_the_cap() -> None:
    assert [requeue_delay(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize("cap", [0.0, 0.5])
def test_a_cap_below_the_base_keeps_the_delay_constant(cap: float) -> None:
    assert [requeue_delay(n, 2.0, cap) for n in (1, 2, 9)] == [2.0, 2.0, 2.0]


def test_requeue_delay_edges() -> None:
    assert requeue_delay(1, 0.0, 60.0) == 0.0
    assert requeue_delay(0, 1.0, 60.0) == 1.0  # attempts never below 1 in practice
    assert requeue_delay(65535, 1.0, 1e9) == MAX_REQUEUE_DELAY


def test_pause_is_off_without_a_cap() -> None:
    assert pause_seconds(3, 1.0, 0.0) == 0.0
    assert pause_seconds(0, 1.0, 60.0) == 0.0
    assert [pause_seconds(n, 0.5, 3.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]


def test_failures_pause_and_successes_step_back_out() -> None:
    state = BackoffState(base=1.0, cap=60.0)
    assert state.success() is Action.NONE  # nothing to recover from
    assert state.failure() is Action.PAUSE
    assert (state.level, state.paused, state.pause) == (1, True, 1.0)
    assert state.failure() is Action.NONE  # results during a pause are ignored
    assert state.success() is Action.NONE
    state.pause_over()
    assert state.failure() is Action.PAUSE  # the RDY 1 test failed
    assert (state.level, state.pause) == (2, 2.0)
    state.pause_over()
    assert state.success() is Action.PAUSE  # one level down, pause again before the next test
    assert state.level == 1
    state.pause_over()
    assert state.success() is Action.RESUME
    assert (state.level, state.paused) == (0, False)


def test_disabled_backoff_never_pauses() -> None:
    state = BackoffState(base=1.0, cap=0.0)
    assert not state.enabled
    assert state.failure() is Action.NONE
    assert state.level == 0


def test_reset() -> None:
    state = BackoffState(base=1.0, cap=5.0)
    state.failure()
    state.reset()
    assert (state.level, state.paused) == (0, False)


@given(
    st.integers(min_value=1, max_value=200),
    st.floats(min_value=0.01, max_value=10),
    st.floats(min_value=0.01, max_value=600),
    st.floats(min_value=0, max_value=1),
)
def test_a_reconnect_waits_between_half_and_all_of_the_capped_doubling(
    failures: int, base: float, cap: float, jitter: float
) -> None:
    nominal = min(base * 2 ** min(failures - 1, 64), cap)
    delay = reconnect_delay(failures, base, cap, jitter)
    assert nominal / 2 - 1e-9 <= delay <= nominal + 1e-9
    assert reconnect_delay(failures, base, cap, 0.0) <= delay <= reconnect_delay(failures, base, cap, 1.0)


def test_connections_dropped_right_after_sub_back_off_more_and_more() -> None:
    backoff = ReconnectBackoff(base=0.5, cap=30.0, stable_after=10.0)
    floors = []
    for _ in range(8):
        backoff.connection_ended(lasted=0.2)  # nsqd closed it right after SUB
        floors.append(backoff.delay(jitter=0.0))
    assert floors == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    backoff.connect_failed()  # refused connections count in the same row
    assert backoff.delay(jitter=0.0) == 15.0


def test_only_a_connection_that_stayed_up_starts_the_count_again() -> None:
    backoff = ReconnectBackoff(base=0.5, cap=30.0, stable_after=10.0)
    for _ in range(5):
        backoff.connect_failed()
    backoff.connection_ended(lasted=9.9)  # up, but not for long: still failing
    assert backoff.failures == 6
    backoff.connection_ended(lasted=10.0)
    assert backoff.failures == 1
    assert backoff.delay(jitter=1.0) == 0.5  # the first retry after a good connection comes soon
    assert reconnect_delay(0, 0.5, 30.0, 1.0) == 0.0
