"""The message handed to `handle_message`: gnsq's Message API without a signal per message.

gnsq's Message carries three blinker signals that each message fires (about 20 us a message);
this one holds a reference to its connection and calls it directly. It keeps gnsq's methods so
handlers written for gnsq or gnsq_mp run unchanged.
"""

from __future__ import annotations

from typing import Protocol

from gnsq.errors import NSQException


class Responder(Protocol):
    """The connection a message came on: it writes the FIN/REQ/TOUCH commands."""

    def finish(self, message: Message) -> None: ...

    def requeue(self, message: Message, time_ms: int | None, backoff: bool) -> None: ...

    def touch(self, message: Message) -> None: ...


class Message:
    """One delivery of an NSQ message: respond exactly once with finish() or requeue()."""

    __slots__ = ("_async", "_connection", "_responded", "_touched_at", "attempts", "body", "id", "timestamp")

    def __init__(
        self, connection: Responder, timestamp: int, attempts: int, id: bytes, body: bytes, received_at: float
    ) -> None:
        self._connection = connection
        self.timestamp = timestamp
        """Nanoseconds since the epoch when nsqd first received the message."""
        self.attempts = attempts
        """This delivery's number: 1 the first time, growing with every requeue or timeout."""
        self.id = id
        """The 16-byte ASCII message id, as gnsq gives it."""
        self.body = body
        self._responded = False
        self._async = False
        self._touched_at = received_at

    def enable_async(self) -> None:
        """The handler will respond later (finish/requeue from another greenlet), not on return."""
        self._async = True

    def is_async(self) -> bool:
        return self._async

    def has_responded(self) -> bool:
        return self._responded

    def finish(self) -> None:
        """Done: nsqd forgets the message."""
        if self._responded:
            raise NSQException("already responded")
        self._responded = True
        self._connection.finish(self)

    def requeue(self, time_ms: int | None = None, backoff: bool = True) -> None:
        """Failed: nsqd delivers it again after `time_ms` (default: the worker's growing delay).

        `backoff` also pauses the whole consumer for a while, as in gnsq and pynsq.
        """
        if self._responded:
            raise NSQException("already responded")
        self._responded = True
        self._connection.requeue(self, time_ms, backoff)

    def touch(self) -> None:
        """Still working: nsqd restarts this message's timeout."""
        if self._responded:
            raise NSQException("already responded")
        self._connection.touch(self)

    @property
    def message_id(self) -> str:
        """The id as text, for logs."""
        return self.id.decode("ascii", "replace")

    def __repr__(self) -> str:
        return f"<Message {self.message_id} attempts={self.attempts} bytes={len(self.body)}>"
