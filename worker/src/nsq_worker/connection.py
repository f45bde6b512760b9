"""One connection to one nsqd: gnsq does the handshake, this module owns the hot path after it.

gnsq's NsqdTCPClient is good at the handshake (IDENTIFY, TLS, snappy/deflate, AUTH, SUB) and is
used for exactly that. Once subscribed, its socket is taken over: one greenlet reads large chunks
and parses every frame in them at once; one greenlet writes every queued FIN/REQ/TOUCH/NOP in a
single `sendall`. Nothing here fires a signal or spawns a greenlet per message.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from collections import deque
from typing import Any, Protocol

import gevent
import gnsq.protocol as gnsq_protocol
from gevent import ssl as gevent_ssl
from gevent.event import AsyncResult, Event
from gnsq import NsqdTCPClient

from nsq_worker import protocol
from nsq_worker.backoff import requeue_delay
from nsq_worker.message import Message
from nsq_worker.metrics import Metrics
from nsq_worker.settings import Settings, client_id

log = logging.getLogger("nsq_worker.connection")

HANDSHAKE_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 10.0
RECV_SIZE = 256 * 1024
# nsqd buffers its writes to us: up to this many bytes, or this long. 64 KiB is nsqd's maximum.
# nsqd flushes at once whenever our RDY window is full, so the timeout only adds latency when idle.
OUTPUT_BUFFER_SIZE = 64 * 1024
OUTPUT_BUFFER_TIMEOUT_MS = 50


class ConnectionLostError(Exception):
    """The connection to nsqd ended or can no longer be trusted."""


class HandshakeError(Exception):
    """nsqd and the settings disagree (no TLS offered, AUTH needed, ...): retrying will not help soon."""


class PublishError(Exception):
    """nsqd refused a PUB, or the connection ended before it answered."""


class Owner(Protocol):
    """The worker side of a session: it runs handlers and keeps the backoff state."""

    def deliver(self, messages: list[Message]) -> None: ...

    def result(self, success: bool) -> None: ...


def make_ssl_context(settings: Settings) -> gevent_ssl.SSLContext:
    """TLS 1.2+ with certificate and host name verification unless NSQ_TLS_VERIFY=false."""
    context = gevent_ssl.SSLContext(gevent_ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = gevent_ssl.TLSVersion.TLSv1_2
    if settings.tls_verify:
        context.verify_mode = gevent_ssl.CERT_REQUIRED
        context.check_hostname = True
        if settings.tls_ca_file:
            context.load_verify_locations(cafile=settings.tls_ca_file)
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = gevent_ssl.CERT_NONE
    if settings.tls_cert_file and settings.tls_key_file:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


class _Handshake(NsqdTCPClient):  # type: ignore[misc]
    """gnsq's client, with msg_timeout in IDENTIFY, verified TLS, and heartbeats tolerated anywhere."""

    deflate_level: int
    max_ready_count: int

    def __init__(self, settings: Settings, ssl_context: gevent_ssl.SSLContext | None) -> None:
        super().__init__(
            address=settings.nsqd_host,
            port=settings.nsqd_port,
            timeout=HANDSHAKE_TIMEOUT,
            client_id=client_id(),
            heartbeat_interval=settings.heartbeat_interval,
            output_buffer_size=OUTPUT_BUFFER_SIZE,
            output_buffer_timeout=OUTPUT_BUFFER_TIMEOUT_MS,
            tls_v1=settings.tls,
            snappy=settings.compression == "snappy",
            deflate=settings.compression == "deflate",
            auth_secret=settings.auth_secret.encode() if settings.auth_secret else None,
            user_agent=settings.user_agent,
        )
        self.settings = settings
        self.ssl_context = ssl_context
        self.identify_response: dict[str, Any] = {}
        self.auth_response: dict[str, Any] | None = None
        self.last_error = ""

    def handle_error(self, data: bytes) -> Any:
        self.last_error = data.decode("utf-8", "replace")
        return super().handle_error(data)

    def _next_reply(self) -> bytes:
        """The next response that is not a heartbeat (gnsq already answered those with NOP)."""
        while True:
            frame, data = self.read_response()
            if frame == protocol.FRAME_ERROR:
                raise HandshakeError(f"nsqd refused: {self.last_error}")
            if frame == protocol.FRAME_RESPONSE and data == protocol.HEARTBEAT:
                continue
            if frame != protocol.FRAME_RESPONSE:
                raise HandshakeError(f"expected a response from nsqd, got frame type {frame}")
            reply: bytes = data
            return reply

    def check_ok(self, expected: bytes = protocol.OK) -> None:
        reply = self._next_reply()
        if reply != expected:
            raise HandshakeError(f"nsqd answered {reply!r}, expected {expected!r}")

    def identify(self) -> dict[str, Any]:
        settings = self.settings
        self.send(
            gnsq_protocol.identify(
                {
                    "client_id": self.client_id,
                    "hostname": self.hostname,
                    "feature_negotiation": True,
                    "heartbeat_interval": int(settings.heartbeat_interval * 1000),
                    "msg_timeout": int(settings.msg_timeout * 1000),
                    "output_buffer_size": self.output_buffer_size,
                    "output_buffer_timeout": self.output_buffer_timeout,
                    "tls_v1": self.tls_v1,
                    "snappy": self.snappy,
                    "deflate": self.deflate,
                    "deflate_level": self.deflate_level,
                    "user_agent": self.user_agent,
                }
            )
        )
        reply = self._next_reply()
        response: dict[str, Any] = {} if reply == protocol.OK else json.loads(reply.decode("utf-8"))
        self.identify_response = response
        self.max_ready_count = int(response.get("max_rdy_count") or self.max_ready_count)

        if settings.tls:
            if not response.get("tls_v1"):
                raise HandshakeError(
                    "NSQ_TLS is on but nsqd offers no TLS (start it with --tls-cert/--tls-key)"
                )
            self.upgrade_to_tls()
        if self.snappy or self.deflate:
            if response.get("snappy") and self.snappy:
                self.upgrade_to_snappy()
            elif response.get("deflate") and self.deflate:
                self.deflate_level = int(response.get("deflate_level") or self.deflate_level)
                self.upgrade_to_defalte()
            else:
                log.warning(
                    "nsqd does not offer %s compression; continuing uncompressed",
                    settings.compression,
                    extra={"nsqd": settings.nsqd_tcp_address},
                )
        if response.get("auth_required"):
            if not self.auth_secret:
                raise HandshakeError("nsqd requires AUTH; set NSQ_AUTH_SECRET or NSQ_AUTH_SECRET_FILE")
            self.send(gnsq_protocol.auth(self.auth_secret))
            self.auth_response = json.loads(self._next_reply().decode("utf-8"))
        elif self.auth_secret:
            log.warning("an AUTH secret is set but nsqd does not ask for one; not sending it")
        return response

    def upgrade_to_tls(self) -> None:
        assert self.ssl_context is not None
        self.stream.ensure_connection()
        self.stream.socket = self.ssl_context.wrap_socket(
            self.stream.socket, server_hostname=self.settings.nsqd_host
        )
        self.check_ok()


def connect(
    settings: Settings, ssl_context: gevent_ssl.SSLContext | None, owner: Owner, metrics: Metrics
) -> Session:
    """Open, negotiate and subscribe; the session starts with RDY 0."""
    client = _Handshake(settings, ssl_context)
    try:
        client.connect()
        client.identify()
        client.subscribe(settings.topic, settings.channel)
        client.check_ok()
    except BaseException:
        client.close_stream()
        raise
    sock = client.stream.socket
    leftover = client.stream.consume_buffer()
    # nsqd sends at least a heartbeat every interval; two missed ones and a bit mean the peer is gone.
    sock.settimeout(settings.heartbeat_interval * 2 + 5)
    return Session(sock, leftover, client.identify_response, client.auth_response, settings, owner, metrics)


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
        self._pending = leftover
        self.identify_response = identify_response
        self.auth_response = auth_response
        self.settings = settings
        self.owner = owner
        self.metrics = metrics
        self.max_rdy_count = int(identify_response.get("max_rdy_count", 2500))
        self.msg_timeout = float(identify_response.get("msg_timeout", 60_000)) / 1000.0
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

    # -- reading -----------------------------------------------------------------------------

    def run(self) -> None:
        """Read until the connection ends; raises ConnectionLostError unless closed on purpose."""
        self._writer = gevent.spawn(self._write_loop)
        try:
            if self._pending:
                self._pending = self._consume(self._pending)
            self._read_loop()
        except protocol.FrameError as error:
            self.close(f"bad frame from nsqd: {error}")
            raise ConnectionLostError(str(error)) from error
        finally:
            if not self.closed:
                self.close("read loop ended")

    def _read_loop(self) -> None:
        recv = self.sock.recv
        consume = self._consume
        pending = self._pending
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
            pending = consume(pending + chunk if pending else chunk)

    def _consume(self, data: bytes) -> bytes:
        raw_messages, others, used = protocol.split_frames(data)
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
        return data[used:] if used < len(data) else b""

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
        if self.closed:
            raise PublishError(f"not connected to nsqd ({self.close_reason})")
        command = gnsq_protocol.publish(topic, body)
        result = AsyncResult()
        self._publishes.append(result)
        self.send(command)
        try:
            reply = result.get(timeout=PUBLISH_TIMEOUT)
        except gevent.Timeout:
            raise PublishError(f"nsqd did not answer PUB to {topic!r} within {PUBLISH_TIMEOUT:g}s") from None
        if reply != protocol.OK:
            raise PublishError(f"nsqd answered PUB with {reply!r}")

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
