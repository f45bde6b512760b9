"""A subscribed connection to one nsqd: the hot path after the handshake.

One greenlet reads large chunks and parses every frame in them at once; one greenlet writes every
queued FIN/REQ/TOUCH/NOP in a single `sendall`. Nothing here fires a signal or spawns a greenlet
per message.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any, Protocol

import gevent
import gnsq.protocol as gnsq_protocol
from gevent.event import AsyncResult, Event

from nsq_worker import protocol
from nsq_worker.backoff import requeue_delay
from nsq_worker.message import Message
from nsq_worker.metrics import Metrics
from nsq_worker.settings import Settings

log = logging.getLogger("nsq_worker.session")

PUBLISH_TIMEOUT = 10.0
RECV_SIZE = 256 * 1024


class ConnectionLostError(Exception):
    """The connection to nsqd ended or can no longer be trusted."""


class PublishError(Exception):
    """nsqd refused a PUB, or the connection ended before it answered."""


class Owner(Protocol):
    """The worker side of a session: it runs handlers and keeps the backoff state."""

    def deliver(self, messages: list[Message]) -> None: ...

    def result(self, success: bool) -> None: ...


class Session:
    """A subscribed connection: the read loop, the batched writer and the messages in flight."""

    def __init__(
        self,
        sock: Any,
        leftover: bytes,
        identify_response: dict[str, Any],
        auth_response: dict[str, Any] | None,
        settings: Settings,
        owner: Owner,
        metrics: Metrics,
    ) -> None:
        self.sock = sock
        self._leftover = leftover
        self.identify_response = identify_response
        self.auth_response = auth_response
        self.settings = settings
        self.owner = owner
        self.metrics = metrics
        self.max_rdy_count = int(identify_response.get("max_rdy_count", 2500))
        self.msg_timeout = float(identify_response.get("msg_timeout", 60_000)) / 1000.0
        # nsqd 1.3 does not say its --max-msg-size in IDENTIFY; a later one may, and then it wins.
        self.max_msg_size = int(identify_response.get("max_msg_size") or settings.max_msg_size)
        self._frames = protocol.FrameBuffer(protocol.max_frame_size(self.max_msg_size))
        self.in_flight: dict[bytes, Message] = {}
        self.closed = False
        self.close_reason = ""
        self.last_frame_at = time.monotonic()
        self.rdy = 0
        self.watch_success = False
        """Set by the owner while backing off: finishes then count as successes for it."""
        self._out: list[bytes] = []
        self._out_ready = Event()
        self._sending = False
        self._publishes: deque[AsyncResult] = deque()
        self._close_wait = Event()
        self._writer: gevent.Greenlet | None = None
        self.finished_ids: OrderedDict[bytes, None] | None = None
        """The worker's dedup window (kept across connections), or None when it is off."""
        self.dedup_window = settings.dedup_window

    # -- reading -----------------------------------------------------------------------------

    def run(self) -> None:
        """Read until the connection ends; raises ConnectionLostError unless closed on purpose."""
        self._writer = gevent.spawn(self._write_loop)
        try:
            if self._leftover:
                self._consume(self._leftover)
            self._read_loop()
        except protocol.FrameError as error:
            log.error(
                "closing the connection to nsqd %s: %s; nsqd redelivers the %d messages in flight "
                "after msg_timeout",
                self.settings.nsqd_tcp_address, error, len(self.in_flight),
                extra={"max_msg_size": self.max_msg_size},
            )  # fmt: skip
            self.close(f"bad frame from nsqd: {error}")
            raise ConnectionLostError(str(error)) from error
        finally:
            if not self.closed:
                self.close("read loop ended")

    def _read_loop(self) -> None:
        recv = self.sock.recv
        consume = self._consume
        while not self.closed:
            try:
                chunk = recv(RECV_SIZE)
            except TimeoutError as error:
                self.close("no data from nsqd for two heartbeat intervals")
                raise ConnectionLostError(self.close_reason) from error
            except OSError as error:
                if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue  # a compressed chunk that decompressed to nothing yet
                if self.closed:
                    return
                self.close(f"read failed: {error}")
                raise ConnectionLostError(self.close_reason) from error
            if not chunk:
                if self.closed:
                    return
                self.close("nsqd closed the connection")
                raise ConnectionLostError(self.close_reason)
            self.last_frame_at = time.monotonic()
            consume(chunk)

    def _consume(self, chunk: bytes) -> None:
        raw_messages, others = self._frames.feed(chunk)
        if others:
            self._handle_others(others)
        if raw_messages:
            now = self.last_frame_at
            messages = [
                Message(self, ts, attempts, mid, body, now) for ts, attempts, mid, body in raw_messages
            ]
            in_flight = self.in_flight
            for message in messages:
                in_flight[message.id] = message
            self.metrics.received += len(messages)
            self.owner.deliver(messages)

    def _handle_others(self, frames: list[protocol.RawFrame]) -> None:
        for frame_type, payload in frames:
            if frame_type == protocol.FRAME_RESPONSE:
                if payload == protocol.HEARTBEAT:
                    self.send(protocol.NOP)
                elif payload == protocol.CLOSE_WAIT:
                    self._close_wait.set()
                elif self._publishes:
                    self._publishes.popleft().set(payload)
                else:
                    log.debug("unexpected response from nsqd: %r", payload[:200])
                continue
            code = protocol.error_code(payload)
            text = payload.decode("utf-8", "replace")
            if code in protocol.NON_FATAL_ERRORS:
                # e.g. a FIN for a message that timed out meanwhile: nsqd redelivers it, nothing is lost.
                log.warning("nsqd refused a command: %s", text, extra={"nsq_error": code})
                continue
            if self._publishes:
                # nsqd treats every refused PUB/MPUB/DPUB as fatal: it closes the connection after this.
                self._publishes.popleft().set_exception(PublishError(text))
            log.error("nsqd error: %s", text, extra={"nsq_error": code})

    # -- writing -----------------------------------------------------------------------------

    def send(self, command: bytes) -> None:
        """Queue a command; the writer sends everything queued in one go when this greenlet yields."""
        out = self._out
        out.append(command)
        if len(out) == 1:
            self._out_ready.set()

    def _write_loop(self) -> None:
        out = self._out
        ready = self._out_ready
        sendall = self.sock.sendall
        try:
            while not self.closed:
                ready.wait()
                ready.clear()
                while out and not self.closed:
                    data = b"".join(out) if len(out) > 1 else out[0]
                    out.clear()
                    self._sending = True
                    try:
                        sendall(data)
                    finally:
                        self._sending = False
        except Exception as error:  # any write failure ends the connection
            self.close(f"write failed: {error!r}")

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued has been handed to the socket."""
        deadline = time.monotonic() + timeout
        while (self._out or self._sending) and not self.closed:
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(0.005)
        return not self._out

    # -- responses (called through Message) ---------------------------------------------------

    def finish(self, message: Message) -> None:
        ids = self.finished_ids
        if ids is not None:
            # Handled here even when the FIN cannot reach nsqd any more: a redelivery is a duplicate.
            ids[message.id] = None
            if len(ids) > self.dedup_window:
                ids.popitem(last=False)
        if self.closed:
            return self._orphaned(message, "finish")
        in_flight = self.in_flight
        current = in_flight.pop(message.id, None)
        if current is not message and current is not None:
            in_flight[message.id] = current  # a redelivery of this id (it timed out) is in flight too
        out = self._out
        out.append(b"FIN " + message.id + b"\n")
        if len(out) == 1:
            self._out_ready.set()
        self.metrics.finished += 1
        if self.watch_success:
            self.owner.result(True)
        return None

    def requeue(self, message: Message, time_ms: int | None, backoff: bool) -> None:
        if self.closed:
            return self._orphaned(message, "requeue")
        if time_ms is None:
            settings = self.settings
            time_ms = int(
                requeue_delay(message.attempts, settings.requeue_delay, settings.backoff_cap) * 1000
            )
        self._forget(message)
        self.send(protocol.req(message.id, time_ms))
        self.metrics.requeued += 1
        if backoff:
            self.owner.result(False)
        return None

    def touch(self, message: Message) -> None:
        if self.closed:
            return None
        message._touched_at = time.monotonic()
        self.send(protocol.touch(message.id))
        self.metrics.touched += 1
        return None

    def _forget(self, message: Message) -> None:
        current = self.in_flight.pop(message.id, None)
        if current is not message and current is not None:
            self.in_flight[message.id] = current

    def _orphaned(self, message: Message, what: str) -> None:
        # The connection that delivered it is gone: nsqd redelivers the message after its timeout.
        self._forget(message)
        log.info(
            "cannot %s message %s: its connection is closed; nsqd will redeliver it",
            what,
            message.message_id,
            extra={"message_id": message.message_id, "attempts": message.attempts},
        )

    # -- control -----------------------------------------------------------------------------

    def ready(self, count: int) -> None:
        count = max(0, min(count, self.max_rdy_count))
        if count != self.rdy and not self.closed:
            self.rdy = count
            self.send(protocol.rdy(count))

    def publish(self, topic: str, body: bytes) -> None:
        """PUB on this connection and wait for nsqd's OK (raises PublishError otherwise)."""
        self._check_topic("PUB", topic)
        self._publish("PUB", topic, gnsq_protocol.publish(topic, body), 1)

    def mpublish(self, topic: str, bodies: Sequence[bytes]) -> None:
        """MPUB: every body in one command, all or none published; waits for nsqd's OK."""
        bodies = list(bodies)
        self._check_topic("MPUB", topic)
        if not bodies:
            self.metrics.publish_errors += 1
            raise PublishError("E_BAD_BODY: MPUB needs at least one body (not sent)")
        self._publish("MPUB", topic, gnsq_protocol.multipublish(topic, bodies), len(bodies))

    def dpublish(self, topic: str, body: bytes, delay_ms: int) -> None:
        """DPUB: nsqd holds the message `delay_ms` before delivering it; waits for nsqd's OK."""
        self._check_topic("DPUB", topic)
        if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or delay_ms < 0:
            self.metrics.publish_errors += 1
            raise PublishError(f"E_INVALID: DPUB delay must be a whole number of ms >= 0, not {delay_ms!r}")
        self._publish("DPUB", topic, gnsq_protocol.deferpublish(topic, body, delay_ms), 1)

    def _check_topic(self, verb: str, topic: str) -> None:
        # Checked here because nsqd closes the connection after any refused publish.
        if not isinstance(topic, str) or not gnsq_protocol.valid_topic_name(topic):
            self.metrics.publish_errors += 1
            raise PublishError(f"E_BAD_TOPIC: {verb} topic name {topic!r} is not valid (not sent)")

    def _publish(self, verb: str, topic: str, command: bytes, count: int) -> None:
        """Send one publish command and wait for nsqd's answer; replies come back in order."""
        if self.closed:
            self.metrics.publish_errors += 1
            raise PublishError(f"not connected to nsqd ({self.close_reason})")
        result = AsyncResult()
        self._publishes.append(result)
        self.send(command)
        try:
            reply = result.get(timeout=PUBLISH_TIMEOUT)
        except gevent.Timeout:
            self.metrics.publish_errors += 1
            raise PublishError(
                f"nsqd did not answer {verb} to {topic!r} within {PUBLISH_TIMEOUT:g}s"
            ) from None
        except PublishError:
            self.metrics.publish_errors += 1
            raise
        if reply != protocol.OK:
            self.metrics.publish_errors += 1
            raise PublishError(f"nsqd answered {verb} with {reply!r}")
        self.metrics.published += count

    def close_gracefully(self, timeout: float) -> None:
        """CLS, wait for CLOSE_WAIT (every earlier command is then processed), flush, close."""
        if self.closed:
            return
        self.send(protocol.CLS)
        if not self._close_wait.wait(timeout):
            log.warning("nsqd did not answer CLS within %.1fs", timeout)
        self.flush(timeout=1.0)
        self.close("closed cleanly")

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._out_ready.set()
        while self._publishes:
            self._publishes.popleft().set_exception(PublishError(f"connection closed: {reason}"))
        try:
            self.sock.close()
        except Exception as error:  # a broken socket may fail to close; it is closed anyway
            log.debug("closing the socket failed: %r", error)
