"""Faults on the wire between a worker and nsqd, which a healthy nsqd never makes on its own.

`CuttingProxy` stands between a worker and a real nsqd and can drop every connection right after it
is made (an nsqd or a load balancer that keeps closing connections after SUB). `MisbehavingNsqd`
speaks just enough of the protocol to subscribe a worker, then sends a corrupt frame header (a
broken or hostile server): a real nsqd cannot be made to send one. Both listen on loopback only.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from tests.rig.procs import free_port


class CuttingProxy:
    """A TCP proxy to `upstream` that, while `cutting`, closes each connection `cut_after` seconds in."""

    def __init__(self, upstream: str, cut_after: float = 0.3) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.cut_after = cut_after
        self.cutting = True
        self.accepted: list[float] = []  # time.monotonic() of every connection accepted
        self.kept: list[float] = []  # ... of those accepted while not cutting
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", free_port()))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted.append(time.monotonic())
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()
            if self.cutting:
                threading.Timer(self.cut_after, self._close, args=(client, server)).start()
            else:
                self.kept.append(time.monotonic())

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                target.sendall(chunk)
        self._close(source, target)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut_all(self) -> None:
        """Drop every open connection now (whatever `cutting` says)."""
        with self._lock:
            sockets, self._open = self._open, []
        self._close(*sockets)

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        self.cut_all()


@dataclass
class Subscription:
    """What one connection to the misbehaving server saw."""

    subscribed_at: float = 0.0
    closed_by_client_at: float | None = None
    bytes_sent_after_sub: int = 0


@dataclass
class MisbehavingNsqd:
    """Subscribes a worker like nsqd does, then, on its first RDY, sends `payload` and waits.

    The worker must judge the stream by what it has received and close the connection itself.
    """

    payload: bytes
    connections: list[Subscription] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", free_port()))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        seen = Subscription()
        with contextlib.suppress(OSError), sock:
            reader = sock.makefile("rb")
            if reader.read(4) != b"  V2":
                return
            if reader.readline() != b"IDENTIFY\n":
                return
            (size,) = struct.unpack(">I", reader.read(4))
            json.loads(reader.read(size))
            identify = {"max_rdy_count": 2500, "version": "1.3.0", "max_msg_timeout": 900000,
                        "msg_timeout": 60000, "tls_v1": False, "deflate": False, "snappy": False,
                        "auth_required": False, "output_buffer_size": 16384, "output_buffer_timeout": 250,
                        "sample_rate": 0}  # fmt: skip
            sock.sendall(_frame(0, json.dumps(identify).encode()))
            if not reader.readline().startswith(b"SUB "):
                return
            sock.sendall(_frame(0, b"OK"))
            seen.subscribed_at = time.monotonic()
            self.connections.append(seen)
            if not reader.readline().startswith(b"RDY "):
                return
            sock.sendall(self.payload)
            seen.bytes_sent_after_sub = len(self.payload)
            sock.settimeout(30)
            while reader.read1(65536):  # whatever else the worker says, until it closes
                pass
            seen.closed_by_client_at = time.monotonic()

    def stop(self) -> None:
        self._listener.close()


def _frame(frame_type: int, payload: bytes) -> bytes:
    return struct.pack(">iI", len(payload) + 4, frame_type) + payload
