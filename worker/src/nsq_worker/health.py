"""/healthz, /readyz and /metrics on one small gevent.pywsgi server, and the termination message.

Liveness (`/healthz`, `/livez`) means "this process is alive and its gevent loop turns": restarting
cannot bring an unreachable nsqd back, so an outage makes the worker unready, never dead. The server
runs in the same loop it vouches for, so a loop blocked by a handler (or a setup) that never yields
answers nothing and the kubelet's probe times out, which counts as a failure; a probe that waited
behind a stall longer than the worker's limit gets a 503 naming it. Readiness (`/readyz`) means
"subscribed to nsqd, heartbeats arriving, and not draining". A failing probe's JSON says why in
`reason`.

The termination message is the one line Kubernetes keeps in the pod's status after the container
exits (and the operator copies into the NsqConsumer's status): why the worker stopped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from gevent.pywsgi import WSGIServer

log = logging.getLogger("nsq_worker.health")

TERMINATION_MESSAGE_ENV = "NSQ_TERMINATION_MESSAGE_PATH"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"  # the kubelet's default terminationMessagePath
TERMINATION_MESSAGE_MAX = 300  # one line in `kubectl describe` and in the consumer's status


class Probe(Protocol):
    """What the server asks the worker."""

    def healthz(self) -> tuple[bool, dict[str, Any]]: ...

    def readyz(self) -> tuple[bool, dict[str, Any]]: ...

    def metrics_exposition(self, accept: str | None) -> tuple[bytes, str]: ...


def make_app(probe: Probe) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", "text/plain", b"GET only\n")
        if path == "/metrics":
            body, content_type = probe.metrics_exposition(environ.get("HTTP_ACCEPT"))
            return _reply(start_response, "200 OK", content_type, body)
        if path in ("/healthz", "/livez"):
            ok, detail = probe.healthz()
        elif path == "/readyz":
            ok, detail = probe.readyz()
        else:
            return _reply(
                start_response, "404 Not Found", "text/plain", b"try /healthz, /readyz or /metrics\n"
            )
        body = (json.dumps({"ok": ok, **detail}, sort_keys=True) + "\n").encode()
        return _reply(start_response, "200 OK" if ok else "503 Service Unavailable", "application/json", body)

    return app


def _reply(start_response: StartResponse, status: str, content_type: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def serve(host: str, port: int, probe: Probe) -> WSGIServer:
    """Start serving in the background (raises OSError when the port is taken)."""
    server = WSGIServer((host, port), make_app(probe), log=None, error_log=log)
    server.start()
    return server


def termination_message_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the reason for exiting goes: NSQ_TERMINATION_MESSAGE_PATH, empty to turn it off."""
    env = os.environ if environ is None else environ
    return env.get(TERMINATION_MESSAGE_ENV, TERMINATION_MESSAGE_PATH)


def write_termination_message(path: str, reason: str) -> bool:
    """Replace the file's content with `reason` on one short line; False when it cannot be written.

    The file is never created: outside a pod /dev/termination-log does not exist, and a worker run
    as root must not leave a stray file in /dev.
    """
    line = " ".join(reason.split())
    if len(line) > TERMINATION_MESSAGE_MAX:
        line = line[: TERMINATION_MESSAGE_MAX - 3] + "..."
    if not path:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError:
        return False
    try:
        os.write(fd, (line + "\n").encode("utf-8", "replace"))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
