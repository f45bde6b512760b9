"""kopf wiring only: watches that feed the scheduler, and the start and end of the operator.

No kopf daemon, timer or on.create/update/delete handler: kopf puts a finalizer on every object
that has one, and then an NsqConsumer cannot be deleted while no operator runs. Watching handlers
(`on.event`) and indexes carry none, and kopf removes the finalizer that older versions left.

The worker Deployments are a kopf index: kopf fills every index from its first listing before any
`on.event` handler runs, so no consumer is reconciled before live state holds all its Deployments
(else a restart would re-create what exists). Handlers are async: the scheduler is not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kopf

from nsq_operator import health, live
from nsq_operator.kube import Kube, load_client
from nsq_operator.leader import LeaderElection
from nsq_operator.metrics import watch_consumers
from nsq_operator.resource import GROUP, LABEL_MANAGED_BY, MANAGER, PLURAL, VERSION
from nsq_operator.scheduler import Scheduler

log = logging.getLogger(__name__)

# Server-side watch timeout below the client's, so the server ends each watch cleanly and kopf
# re-lists; both well under the common 5-10 min load-balancer idle limits. Integers on purpose:
# kopf sends the value as is, and the API server rejects `timeoutSeconds=120.0` with 400.
WATCH_SERVER_TIMEOUT = 120
WATCH_CLIENT_TIMEOUT = 150
WATCH_CONNECT_TIMEOUT = 10
RECONCILE_THREADS = 16  # reconciles at once; each mostly waits on the API server


@dataclass(frozen=True)
class Options:
    """What `nsq-operator run` was told, handed to the startup handler through kopf's memo."""

    health_host: str | None = None  # None: no health server
    health_port: int = 8080
    lease_namespace: str | None = None  # None: no leader election, this operator leads
    lease_name: str = MANAGER
    identity: str = MANAGER


WORKERS = {"labels": {LABEL_MANAGED_BY: MANAGER}}


@kopf.index("apps", "v1", "deployments", **WORKERS)  # type: ignore[arg-type]
async def workers(body: kopf.Body, **_: Any) -> dict[live.ConsumerKey, live.WorkerView]:
    """Live state: each worker Deployment's compact view, by its consumer."""
    view = live.view(body)
    return {view.key: view}


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """Settings, then the scheduler, the health server and the leader election."""
    workers: kopf.Index[live.ConsumerKey, live.WorkerView] = kwargs["workers"]  # the index, by name
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT
    # The finalizer operators before v2 put on every NsqConsumer: kopf removes it, as nothing needs it.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING  # our events are our own (events.py); kopf's are noise
    options: Options = memo.get("options") or Options()
    api_client = load_client(pool_size=RECONCILE_THREADS)
    executor = ThreadPoolExecutor(max_workers=RECONCILE_THREADS, thread_name_prefix="nsq-reconcile")
    scheduler = Scheduler(Kube(api_client), lambda key: list(workers.get(key, ())), executor)
    memo["scheduler"], memo["executor"] = scheduler, executor
    watch_consumers(scheduler.figures)
    tasks = [asyncio.create_task(scheduler.run(), name="scheduler")]
    if options.health_host is not None:
        memo["health"] = await health.serve(options.health_host, options.health_port, scheduler.problem)
    if options.lease_namespace is None:
        log.info("leader election is off: this operator reconciles on its own")
        scheduler.set_leader(True)
    else:
        election = LeaderElection(api_client, options.lease_namespace, options.lease_name, options.identity)
        memo["election"] = election
        tasks.append(asyncio.create_task(election.run(scheduler.set_leader), name="leader election"))
    memo["tasks"] = tasks


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop reconciling first, then give the Lease up, so a standby takes over at once."""
    scheduler: Scheduler | None = memo.get("scheduler")
    if scheduler is not None:
        scheduler.set_leader(False)
    for task in memo.get("tasks") or []:
        task.cancel()
    election: LeaderElection | None = memo.get("election")
    if election is not None:
        await election.release()
    runner = memo.get("health")
    if runner is not None:
        await runner.cleanup()
    executor = memo.get("executor")
    if isinstance(executor, ThreadPoolExecutor):
        executor.shutdown(wait=False, cancel_futures=True)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def consumer_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    scheduler: Scheduler = memo["scheduler"]
    if type == "DELETED":
        scheduler.remove((body.metadata.namespace or "", body.metadata.name or ""))
    else:
        scheduler.upsert(body)


@kopf.on.event("apps", "v1", "deployments", **WORKERS)  # type: ignore[arg-type]
async def worker_changed(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    scheduler: Scheduler = memo["scheduler"]
    scheduler.worker_event(body, deleted=type == "DELETED")
