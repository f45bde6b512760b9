"""The dedup window's ring: the last N finished ids are kept, oldest dropped first, off by default."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from nsq_worker.message import Message
from nsq_worker.metrics import Metrics
from nsq_worker.session import Session
from nsq_worker.settings import Settings


class _Owner:
    def deliver(self, messages: list[Message]) -> None:
        raise AssertionError("nothing is delivered here")

    def result(self, success: bool) -> None:
        """Backoff results do not matter to the window."""


class _Socket:
    def close(self) -> None:
        """The session closes its socket; nothing to do for this stand-in."""


def _session(window: int) -> Session:
    settings = Settings(
        topic="work", channel="workers", nsqd_tcp_address="127.0.0.1:4150", dedup_window=window
    )
    session = Session(_Socket(), b"", {}, None, settings, _Owner(), Metrics())
    session.close("a test session never writes")  # FINs then stop at the window: nothing is sent
    return session


def _finish(session: Session, message_id: bytes) -> None:
    Message(session, 0, 1, message_id, b"body", 0.0).finish()


@pytest.mark.parametrize("window", [1, 3, 1000])
def test_the_window_keeps_the_last_n_finished_ids_oldest_out_first(window: int) -> None:
    session = _session(window)
    session.finished_ids = OrderedDict()
    ids = [f"{i:016x}".encode() for i in range(window + 5)]
    for message_id in ids:
        _finish(session, message_id)
    assert list(session.finished_ids) == ids[-window:]


def test_finishing_an_id_again_does_not_grow_the_window() -> None:
    session = _session(2)
    session.finished_ids = OrderedDict()
    for message_id in (b"a" * 16, b"a" * 16, b"b" * 16):
        _finish(session, message_id)
    assert list(session.finished_ids) == [b"a" * 16, b"b" * 16]


def test_without_a_window_nothing_is_remembered() -> None:
    session = _session(0)
    _finish(session, b"c" * 16)
    assert session.finished_ids is None
    assert Settings(topic="t", channel="c", nsqd_tcp_address="127.0.0.1:4150").dedup_window == 0
