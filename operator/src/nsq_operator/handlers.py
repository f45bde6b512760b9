"""kopf wiring only: settings, one poll loop per NsqConsumer, and a nudge when its spec changes.

Why a daemon and not `@kopf.timer`: a kopf timer has one interval for every object, fixed when it
is declared, while each NsqConsumer sets its own `lookupd.pollIntervalSeconds`. A daemon is kopf's
per-object timer with a loop we control: it polls, sleeps for the consumer's interval, and wakes
early when the spec changes (the on-event nudge below), so a `kubectl apply` acts at once.

Why `@kopf.on.event` for create/update and not `@kopf.on.create`/`@kopf.on.update`: those store a
diff base and progress in annotations on every change and retry on failure; the nudge cannot fail
and needs no memory, and the daemon starts (and polls) as soon as kopf sees a new object anyway.
All the work is level-based in `reconcile.poll`, run in a thread because it blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf

from nsq_operator import reconcile
from nsq_operator.kube import Kube, load_client
from nsq_operator.lookupd import LookupCache
from nsq_operator.resource import GROUP, PLURAL, VERSION
from nsq_operator.spec import DEFAULT_POLL_INTERVAL_SECONDS

log = logging.getLogger(__name__)

# Server-side watch timeout below the client's, so the server ends each watch cleanly and kopf
# re-lists; both well under the common 5-10 min load-balancer idle limits. Integers on purpose:
# kopf sends the value as is, and the API server rejects `timeoutSeconds=120.0` with 400.
WATCH_SERVER_TIMEOUT = 120
WATCH_CLIENT_TIMEOUT = 150
WATCH_CONNECT_TIMEOUT = 10
LOOKUP_CACHE_TTL = 1.0  # shares one poll's lookups between consumers of a topic; never older than a poll
POLL_THREADS = 8  # polls run at once; each is mostly waiting on HTTP


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Operator-wide settings and the shared clients every consumer's loop uses."""
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT
    # Our own marks, in annotations: the CRD's structural schema would prune kopf's status.kopf.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    if "kube" not in memo:  # tests and embedders may hand in their own
        memo["kube"] = Kube(load_client())
    if "cache" not in memo:
        memo["cache"] = LookupCache(ttl=LOOKUP_CACHE_TTL)
    if "executor" not in memo:
        memo["executor"] = ThreadPoolExecutor(max_workers=POLL_THREADS, thread_name_prefix="nsq-poll")


@kopf.on.cleanup()
def shutdown(memo: kopf.Memo, **_: Any) -> None:
    executor = memo.get("executor")
    if isinstance(executor, ThreadPoolExecutor):
        executor.shutdown(wait=False, cancel_futures=True)


@kopf.daemon(GROUP, VERSION, PLURAL, id="poll", cancellation_timeout=2.0)
async def poll_loop(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Reconcile this NsqConsumer every pollIntervalSeconds, and at once when its spec changes."""
    state = reconcile.ConsumerState()
    wake = memo["wake"] = asyncio.Event()
    loop = asyncio.get_running_loop()
    interval: float = DEFAULT_POLL_INTERVAL_SECONDS
    while not stopped:
        wake.clear()
        snapshot = _plain(body)
        memo["polled_generation"] = snapshot.get("metadata", {}).get("generation")
        try:
            now = datetime.now(UTC)
            result = await loop.run_in_executor(
                memo["executor"], reconcile.poll, memo["kube"], memo["cache"], snapshot, state, now
            )
        except Exception:  # a bug must not end this consumer's polling; the next poll starts afresh
            log.exception("polling %s/%s failed", body.metadata.namespace, body.metadata.name)
            state = reconcile.ConsumerState()
        else:
            interval = result.interval
            for event in result.events:
                kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        await _sleep(interval, wake, stopped)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def nudge(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Wake the poll loop when the spec changed (metadata.generation moved) since its last poll."""
    wake = memo.get("wake")
    if isinstance(wake, asyncio.Event) and body.metadata.get("generation") != memo.get("polled_generation"):
        wake.set()


async def _sleep(seconds: float, wake: asyncio.Event, stopped: kopf.DaemonStopped) -> None:
    async def until_stopped() -> None:
        await stopped.wait(seconds)

    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(until_stopped())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _plain(value: Any) -> Any:
    """A deep, plain copy of kopf's live body, safe to hand to another thread."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
