"""kopf wiring only: watches that feed the scheduler, and the start and end of the operator.

No kopf daemon, timer or on.create/update/delete handler: kopf puts a finalizer on every object
that has one, and then an NsqConsumer cannot be deleted while no operator runs. Watching handlers
(`on.event`) and indexes carry none, and kopf removes the finalizer that older versions left.

The worker Deployments are not watched through kopf but by `watch` (the API server filters them by
label, and each event costs a JSON parse instead of kopf's per-object machinery); no consumer is
reconciled before that watch has listed them all. Handlers are async: the scheduler is not
thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kopf

from nsq_operator import health, metrics, rollout
from nsq_operator.kube import Kube, load_client
from nsq_operator.leader import LeaderElection
from nsq_operator.metrics import watch_consumers
from nsq_operator.resource import GROUP, MANAGER, PLURAL, VERSION
from nsq_operator.scheduler import Scheduler
from nsq_operator.watch import WorkerWatch

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

    namespaces: tuple[str, ...] = ()  # as given to `run`; empty: every namespace
    health_host: str | None = None  # None: no health server
    health_port: int = 8080
    lease_namespace: str | None = None  # None: no leader election, this operator leads
    lease_name: str = MANAGER
    identity: str = MANAGER
    max_concurrent_rollouts: int = rollout.DEFAULT_MAX_CONCURRENT  # 0: no limit


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Settings, then live state, the scheduler, the health server and the leader election."""
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT
    # The finalizer operators before v2 put on every NsqConsumer: kopf removes it, as nothing needs it.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING  # our events are our own (events.py); kopf's are noise
    options: Options = memo.get("options") or Options()
    api_client = load_client(pool_size=RECONCILE_THREADS)
    executor = ThreadPoolExecutor(max_workers=RECONCILE_THREADS, thread_name_prefix="nsq-reconcile")
    workers = WorkerWatch(
        api_client, options.namespaces, lambda view, body, gone: scheduler.worker_event(view, body, gone)
    )
    budget = rollout.Budget(options.max_concurrent_rollouts, metrics.ROLLOUTS_IN_PROGRESS.set)
    metrics.ROLLOUT_LIMIT.set(budget.limit)
    scheduler = Scheduler(Kube(api_client), workers.of, executor, workers.synced, budget)
    memo["scheduler"], memo["executor"], memo["workers"] = scheduler, executor, workers
    workers.start()
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
        scheduler.fence = lambda: election.is_leader
        tasks.append(asyncio.create_task(election.run(scheduler.set_leader), name="leader election"))
    memo["tasks"] = tasks


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop reconciling first, then give the Lease up, so a standby takes over at once."""
    scheduler: Scheduler | None = memo.get("scheduler")
    if scheduler is not None:
        scheduler.set_leader(False)
    workers: WorkerWatch | None = memo.get("workers")
    if workers is not None:
        workers.stop()
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
