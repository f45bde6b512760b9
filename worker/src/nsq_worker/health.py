"""/healthz, /readyz and /metrics on one small gevent.pywsgi server.

Liveness means more than "the process answers": the nsqd connection's heartbeats must be arriving,
so a worker stuck behind a dead connection (or a handler that never yields) gets restarted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from gevent.pywsgi import WSGIServer

log = logging.getLogger("nsq_worker.health")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Probe(Protocol):
    """What the server asks the worker."""

    def healthz(self) -> tuple[bool, dict[str, Any]]: ...

    def readyz(self) -> tuple[bool, dict[str, Any]]: ...

    def metrics_text(self) -> str: ...


def make_app(probe: Probe) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", "text/plain", b"GET only\n")
        if path == "/metrics":
            return _reply(start_response, "200 OK", METRICS_CONTENT_TYPE, probe.metrics_text().encode())
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
