"""The operator's own HTTP endpoints: /healthz (liveness), /readyz and /metrics.

Liveness is "the scheduler makes progress", not "the process answers": a blocked event loop or a
reconcile stuck in a thread fails it, so the kubelet restarts the operator. A standby is live and
ready too: it watches and is ready to take over; `nsq_operator_leader` says which one leads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from nsq_operator import metrics

log = logging.getLogger(__name__)

Problem = Callable[[], str | None]


def app(problem: Problem) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        found = problem()
        if found is not None:
            return web.Response(status=500, text=f"unhealthy: {found}\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        return await healthz(_)

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE})

    application = web.Application()
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    application.router.add_get("/metrics", exposition)
    return application


async def serve(host: str, port: int, problem: Problem) -> web.AppRunner:
    """Start serving on host:port in the running loop; the caller cleans the runner up."""
    runner = web.AppRunner(app(problem), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("serving /healthz, /readyz and /metrics on %s:%s", host, port)
    return runner
