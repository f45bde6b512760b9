"""Requeue delays grow and stop at the cap; the consumer pause steps in and out like go-nsq's."""

from __future__ import annotations

import pytest

from nsq_worker.backoff import MAX_REQUEUE_DELAY, Action, BackoffState, pause_seconds, requeue_delay


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
