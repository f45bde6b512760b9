"""The handshake with one nsqd, done by gnsq: IDENTIFY, TLS, snappy/deflate, AUTH and SUB.

gnsq's NsqdTCPClient is good at the handshake and is used for exactly that. Once subscribed, its
socket is handed to a `Session` (nsq_worker.session), which owns the hot path.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import gnsq.protocol as gnsq_protocol
from gevent import ssl as gevent_ssl
from gnsq import NsqdTCPClient

from nsq_worker import protocol
from nsq_worker.metrics import Metrics
from nsq_worker.session import Owner, Session
from nsq_worker.settings import Settings, client_id

log = logging.getLogger("nsq_worker.handshake")

HANDSHAKE_TIMEOUT = 10.0
# nsqd buffers its writes to us: up to this many bytes, or this long. 64 KiB is nsqd's maximum.
# nsqd flushes at once whenever our RDY window is full, so the timeout only adds latency when idle.
OUTPUT_BUFFER_SIZE = 64 * 1024
OUTPUT_BUFFER_TIMEOUT_MS = 50


class HandshakeError(Exception):
    """nsqd and the settings disagree (no TLS offered, AUTH needed, ...): retrying will not help soon."""


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
