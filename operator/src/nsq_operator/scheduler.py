"""The operator-wide scheduler: one poll per (lookupd, topic), one reconcile loop per NsqConsumer.

Why one scheduler and not a kopf daemon per consumer: kopf puts a finalizer on every object that has
a daemon, so a consumer could not be deleted while no operator runs. The scheduler is fed by watch
events instead (which carry no finalizer), and garbage collection still removes the Deployments.

- Lookups are shared: each distinct (lookupd, topic) is asked once per interval (the shortest among
  its consumers), asynchronously and within one total deadline, whatever the number of consumers
  of the topic. A slow or black-holed lookupd delays only the consumers that use it.
- Reconciles run in threads (the Kubernetes client blocks), one at a time per consumer, with a
  deadline, when an answer arrives, when the spec changes, or when live state says a Deployment
  was deleted or edited, and at the latest one interval plus one deadline after the last.
- Only the leader reconciles and polls; a standby keeps its view of the cluster warm, to take over
  at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from nsq_operator import live, lookupd, metrics, nsqd_stats, reconcile, rollout
from nsq_operator.autoscale import ChannelStats, NsqdStats, Unreadable
from nsq_operator.kube import Kube
from nsq_operator.live import ConsumerKey, WorkerView
from nsq_operator.lookupd import Lookup, LookupdAnswer, LookupFailure
from nsq_operator.manifests import Owner
from nsq_operator.nsqd_stats import TopicStats
from nsq_operator.spec import DEFAULT_POLL_INTERVAL_SECONDS, ConsumerSpec, SpecError, parse
from nsq_operator.status import NsqdScaling

log = logging.getLogger(__name__)

GroupKey = tuple[str, str]  # (lookupd URL, topic)

MAX_LOOKUP_DEADLINE = 10.0  # seconds for one lookup in all; shorter when the interval is
RECONCILE_DEADLINE = 60.0  # seconds one reconcile may keep starting API calls
MIN_GAP = 1.0  # seconds between two reconciles of one consumer, however often it is nudged
RETRY_PAUSE = 5.0  # seconds before a failed reconcile is tried again (or the interval, if shorter)
START_JITTER = 2.0  # polls of a fresh start spread over this many seconds (or the interval)
TAKEOVER_JITTER = 0.3  # the same for a standby becoming leader, whose consumers are all waiting
TICK = 1.0  # the scheduler's heartbeat, which liveness watches
STALLED_AFTER = 15.0  # seconds without a heartbeat: the loop is blocked
STUCK_AFTER = 3 * RECONCILE_DEADLINE  # a reconcile thread still running after this is stuck
MAX_STATS_DEADLINE = 5.0  # seconds for one nsqd's /stats in all; shorter when the interval is
MAX_RDY_REFRESH = 600.0  # seconds an nsqd's max-rdy-count is trusted before it is asked again
STATS_KEPT = 600.0  # seconds a read stays in the cache before it is pruned


@dataclass
class Group:
    """The lookups of one topic at one lookupd, shared by every consumer that names both."""

    key: GroupKey
    subscribers: set[ConsumerKey] = field(default_factory=set)
    interval: float = float(DEFAULT_POLL_INTERVAL_SECONDS)
    answer: LookupdAnswer | None = None
    answered_at: float = 0.0
    changed_at: float = -math.inf  # when the answer last said something new
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def deadline(self) -> float:
        return min(self.interval, MAX_LOOKUP_DEADLINE)


@dataclass
class Slot:
    """One NsqConsumer as the scheduler keeps it."""

    key: ConsumerKey
    body: dict[str, Any]
    spec: ConsumerSpec | SpecError
    state: reconcile.ConsumerState = field(default_factory=reconcile.ConsumerState)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    nudged: bool = True  # something besides a lookup answer wants a reconcile
    task: asyncio.Task[None] | None = None
    since: float = field(default_factory=time.monotonic)  # when it arrived
    last_reconcile: float = -math.inf
    not_before: float = -math.inf  # no reconcile starts earlier (MIN_GAP, or a retry's pause)
    running_since: float | None = None
    recent: dict[str, WorkerView] = field(default_factory=dict)  # written, not yet seen by the watch
    scaling: dict[str, NsqdScaling] = field(default_factory=dict)  # the autoscaler's last, by nsqd
    gone: set[str] = field(default_factory=set)  # uids deleted, maybe still in live state

    @property
    def uid(self) -> str:
        return str(self.body.get("metadata", {}).get("uid", ""))

    @property
    def generation(self) -> object:
        return self.body.get("metadata", {}).get("generation")

    @property
    def interval(self) -> float:
        if isinstance(self.spec, SpecError):
            return float(DEFAULT_POLL_INTERVAL_SECONDS)
        return float(self.spec.lookupd.poll_interval_seconds)

    @property
    def groups(self) -> tuple[GroupKey, ...]:
        if isinstance(self.spec, SpecError):
            return ()
        return tuple((url, self.spec.topic) for url in self.spec.lookupd.http_addresses)

    @property
    def owner(self) -> Owner:
        return Owner(self.key[1], self.key[0], self.uid)


ReadWorkers = Callable[[ConsumerKey], Iterable[WorkerView]]


class Scheduler:
    """Everything the operator knows and does, on kopf's event loop."""

    def __init__(
        self,
        kube: Kube,
        read_workers: ReadWorkers,
        executor: Executor,
        synced: asyncio.Event | None = None,
        budget: rollout.Budget | None = None,
    ) -> None:
        self.kube = kube
        # The operator-wide places for worker Deployments rolling out a new pod template, kept by
        # the watch (so a restarted operator knows from its first list what rolls) and taken by the
        # reconciles. None: no limit.
        self.budget = budget if budget is not None else rollout.UNLIMITED
        self.read_workers = read_workers
        self.executor = executor
        self.synced = synced  # set once live state holds every worker Deployment; None: already
        self.consumers: dict[ConsumerKey, Slot] = {}
        self.groups: dict[GroupKey, Group] = {}
        self.verdicts: dict[tuple[str, str], tuple[int, bool]] = {}  # (ns, name): (generation, drifted)
        self.leader = False
        # Asked before every write, from the reconcile threads too: the elector's own clock, which
        # says "no" once a renewal is overdue even before the loop has heard of it (the fence).
        self.fence: Callable[[], bool] = lambda: True
        self.jitter = START_JITTER  # a fresh start spreads its first polls; a takeover hurries
        self.last_tick = time.monotonic()
        self._session: aiohttp.ClientSession | None = None
        # One /stats read per (nsqd HTTP address, topic) and poll, whichever consumer asks first.
        self._stats: dict[tuple[str, str], tuple[float, asyncio.Task[TopicStats | Unreadable]]] = {}
        self._pruned = time.monotonic()
        self._max_rdy: dict[str, tuple[float, int | None]] = {}

    # -- fed by the watches ------------------------------------------------------------------------

    def upsert(self, body: Mapping[str, Any]) -> None:
        """A consumer appeared or changed; one being deleted is dropped (GC removes its workers)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if meta.get("deletionTimestamp"):
            self.remove(key)
            return
        slot = self.consumers.get(key)
        if slot is not None and slot.uid == meta.get("uid"):
            fresh = slot.generation != meta.get("generation")
            slot.body = _plain(body)
            if fresh:
                self._respec(slot)
            return
        if slot is not None:  # a new consumer under an old name
            self.remove(key)
        slot = Slot(key, _plain(body), parse(body.get("spec")))
        self.consumers[key] = slot
        self._subscribe(slot)
        if self.leader:
            self._start(slot)

    def remove(self, key: ConsumerKey) -> None:
        slot = self.consumers.pop(key, None)
        if slot is None:
            return
        self._unsubscribe(slot)
        if slot.task is not None:
            slot.task.cancel()
        log.info("%s/%s: gone or being deleted; no longer reconciled", *key)

    def worker_event(self, view: WorkerView, body: Mapping[str, Any] | None, deleted: bool) -> None:
        """A worker Deployment changed: judge drift against its consumer, and nudge it when needed."""
        slot = self.consumers.get(view.key)
        where = (view.namespace, view.name)
        if self.budget.observe(where, view.generation, view.rolling, deleted) and self.leader:
            # A place in the rollout budget came free: whoever waits for one may take it now.
            for other in self.consumers.values():
                if other.state.rollout_waiting:
                    self._nudge(other)
        if slot is not None:
            recent = slot.recent.get(view.name)
            if (
                recent is not None
                and recent.uid == view.uid
                and (deleted or view.generation >= recent.generation)
            ):
                del slot.recent[view.name]  # the watch has caught up with what was written
        if deleted:
            self.verdicts.pop(where, None)
            if slot is not None:
                self._nudge(slot)
            return
        if (
            slot is None
            or body is None
            or view.controller_uid != slot.uid
            or isinstance(slot.spec, SpecError)
        ):
            return
        before = self.verdicts.get(where)
        if before is not None and before[0] == view.generation:
            return  # its spec is as judged (a status update, most events): the next poll counts readiness
        drifted = live.drifted(body, slot.owner, slot.spec)
        self.verdicts[where] = (view.generation, drifted)
        if drifted:
            log.info("%s/%s: Deployment %s drifted from what the operator wrote", *view.key, view.name)
            self._nudge(slot)

    # -- leadership --------------------------------------------------------------------------------

    def set_leader(self, leading: bool) -> None:
        if leading == self.leader:
            return
        self.leader = leading
        metrics.LEADER.set(1 if leading else 0)
        if leading:
            if self.consumers:  # taking over from a leader: the workers wait on these answers
                self.jitter = TAKEOVER_JITTER
            for slot in self.consumers.values():
                self._start(slot)
            for group in self.groups.values():
                self._start_group(group)
            return
        for slot in self.consumers.values():
            if slot.task is not None:
                slot.task.cancel()
                slot.task = None
        for group in self.groups.values():
            if group.task is not None:
                group.task.cancel()
                group.task = None
            group.answer = None  # a standby's answers would be stale by the time it leads again

    # -- health and figures ------------------------------------------------------------------------

    async def run(self) -> None:
        """The heartbeat: proof for liveness that the loop turns. Runs until cancelled."""
        try:
            while True:
                self.last_tick = time.monotonic()
                await asyncio.sleep(TICK)
        finally:
            self.set_leader(False)
            if self._session is not None:
                await self._session.close()

    def problem(self) -> str | None:
        """Why the scheduler is not making progress, or None when it is."""
        now = time.monotonic()
        if now - self.last_tick > STALLED_AFTER:
            return f"the scheduler's loop has not turned for {now - self.last_tick:.0f} s"
        for slot in self.consumers.values():
            if slot.running_since is not None and now - slot.running_since > STUCK_AFTER:
                ran = now - slot.running_since
                return f"the reconcile of {slot.key[0]}/{slot.key[1]} has run for {ran:.0f} s"
        return None

    def figures(self) -> list[metrics.ConsumerFigures]:
        """Per consumer, straight from live state: a scrape must not touch what reconciles keep."""
        found = []
        for slot in list(self.consumers.values()):
            views = [v for v in self.read_workers(slot.key) if v.controller_uid == slot.uid]
            ready = sum(v.ready_replicas for v in views)
            nsqds = tuple(
                metrics.NsqdFigures(address, s.depth, s.in_flight, s.current, s.desired)
                for address, s in dict(slot.scaling).items()
            )
            found.append(
                metrics.ConsumerFigures(
                    slot.key[0], slot.key[1], len(views), ready, nsqds, slot.state.rollout_waiting
                )
            )
        return found

    # -- the loops ---------------------------------------------------------------------------------

    def _start(self, slot: Slot) -> None:
        if slot.task is None or slot.task.done():
            slot.since = time.monotonic()  # its first reconcile waits for fresh answers from now
            slot.task = asyncio.get_running_loop().create_task(
                self._consume(slot), name=f"consumer {slot.key}"
            )

    def _start_group(self, group: Group) -> None:
        if group.task is None or group.task.done():
            group.task = asyncio.get_running_loop().create_task(self._poll(group), name=f"lookup {group.key}")

    async def _poll(self, group: Group) -> None:
        """Ask one lookupd about one topic every interval, and tell every consumer of it."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.uniform(0, min(group.interval, self.jitter)))
        url, topic = group.key
        label = lookupd.redact(url)  # asked as written; shown in /metrics without its credentials
        while True:
            started = loop.time()
            answer = await lookupd.ask(self._http(), url, topic, group.deadline)
            metrics.LOOKUPD_POLL_SECONDS.labels(label).observe(loop.time() - started)
            metrics.LOOKUPD_POLLS.labels(label, "failed" if isinstance(answer, LookupFailure) else "ok").inc()
            if answer != group.answer:
                group.changed_at = time.monotonic()
            group.answer, group.answered_at = answer, time.monotonic()
            for key in group.subscribers:
                slot = self.consumers.get(key)
                if slot is not None:
                    slot.wake.set()
            while (left := started + group.interval - loop.time()) > 0:
                group.changed.clear()
                try:
                    await asyncio.wait_for(group.changed.wait(), left)
                except TimeoutError:
                    break

    async def _consume(self, slot: Slot) -> None:
        """Reconcile one consumer whenever there is news, and at least once per interval."""
        if self.synced is not None:
            await self.synced.wait()  # else a restart would re-create what exists
        while True:
            waited = max(0.0, self._overdue_at(slot) - time.monotonic())
            try:
                await asyncio.wait_for(slot.wake.wait(), waited)
                due = (
                    slot.nudged
                    or self._news(slot)
                    or time.monotonic() - slot.last_reconcile >= 0.9 * slot.interval
                )
            except TimeoutError:
                due = True
            slot.wake.clear()
            if not due or not self._answered(slot):
                continue
            gap = slot.not_before - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            slot.nudged = False
            await self._reconcile(slot)

    def _news(self, slot: Slot) -> bool:
        """Whether a lookupd of this consumer said something new since its last reconcile."""
        return any(self.groups[k].changed_at > slot.last_reconcile for k in slot.groups if k in self.groups)

    def _overdue_at(self, slot: Slot) -> float:
        """When a reconcile is due even with no news: one interval and one lookup deadline after the
        last, or, before the first, once the first answers are overdue."""
        if slot.last_reconcile == -math.inf:
            return slot.since + START_JITTER + MAX_LOOKUP_DEADLINE
        return slot.last_reconcile + slot.interval + MAX_LOOKUP_DEADLINE

    def _answered(self, slot: Slot) -> bool:
        """Whether each lookupd has answered once, or the first answers are overdue (then go on)."""
        groups = [self.groups[k] for k in slot.groups if k in self.groups]
        return all(g.answer is not None for g in groups) or time.monotonic() >= self._overdue_at(slot)

    async def _reconcile(self, slot: Slot) -> None:
        loop = asyncio.get_running_loop()
        lookup = self._lookup(slot)
        stats: dict[str, NsqdStats] = {}
        max_rdy_counts: dict[str, int] = {}
        if isinstance(slot.spec, ConsumerSpec) and slot.spec.autoscaled is not None and lookup is not None:
            try:
                stats, max_rdy_counts = await self._nsqd_numbers(slot.spec, lookup, slot.interval)
            except Exception:  # a bug here must not stop reconciles: without numbers the autoscaler holds
                log.exception("reading the nsqd numbers of %s/%s failed", *slot.key)
        views = self._views(slot)
        inputs = reconcile.Inputs(
            body=slot.body,
            lookup=lookup,
            stats=stats,
            max_rdy_counts=max_rdy_counts,
            workers=views,
            drifted=self._drifted(slot.key[0], views),
            now=datetime.now(UTC),
            deadline=time.monotonic() + RECONCILE_DEADLINE,
            still_wanted=lambda: self.leader and self.fence() and self.consumers.get(slot.key) is slot,
            budget=self.budget,
        )
        slot.running_since = started = time.monotonic()
        try:
            outcome = await asyncio.shield(
                loop.run_in_executor(self.executor, reconcile.reconcile, self.kube, inputs, slot.state)
            )
        except Exception:  # a bug must not end this consumer's reconciles; the next starts afresh
            log.exception("reconciling %s/%s failed", *slot.key)
            slot.state = reconcile.ConsumerState()
            metrics.RECONCILES.labels("failed").inc()
            return
        finally:
            slot.running_since = None
            slot.last_reconcile = time.monotonic()
            slot.not_before = slot.last_reconcile + MIN_GAP
        metrics.RECONCILE_SECONDS.observe(slot.last_reconcile - started)
        result = "timeout" if outcome.timed_out else "failed" if outcome.failed else "ok"
        metrics.RECONCILES.labels(result).inc()
        for written in outcome.written:
            view = live.view(written)
            slot.recent[view.name] = view
            self.verdicts[(view.namespace, view.name)] = (view.generation, False)
        slot.gone.update(outcome.deleted)
        if not outcome.abandoned:
            slot.scaling = outcome.scaling
        if outcome.failed:  # an API call failed or time ran out: try again soon, not at once
            slot.not_before = slot.last_reconcile + min(slot.interval, RETRY_PAUSE)
            self._nudge(slot)

    # -- inputs of one reconcile -------------------------------------------------------------------

    async def _nsqd_numbers(
        self, spec: ConsumerSpec, lookup: Lookup, interval: float
    ) -> tuple[dict[str, NsqdStats], dict[str, int]]:
        """Each listed nsqd's numbers for the consumer's channel, and its max-rdy-count where known.

        All nsqd at once, each within one deadline; a channel that does not exist yet is created, so
        messages wait for a consumer scaled to zero. Failures are values: the autoscaler holds.
        """
        deadline = min(interval, MAX_STATS_DEADLINE)
        listed = sorted(lookup.producers or ())
        http = {address: lookup.http_address(address) for address in listed}
        readable = [a for a in listed if http[a] is not None]
        topics = await asyncio.gather(
            *(self._topic_stats(str(http[a]), spec.topic, interval, deadline) for a in readable)
        )
        found: dict[str, NsqdStats] = {
            a: Unreadable("lookupd did not say its HTTP port") for a in listed if http[a] is None
        }
        missing = []
        for address, topic in zip(readable, topics, strict=True):
            found[address] = numbers = nsqd_stats.channel_stats(topic, spec.channel)
            if isinstance(numbers, ChannelStats) and not numbers.channel_exists:
                missing.append(address)
        made = await asyncio.gather(
            *(
                nsqd_stats.create_channel(self._http(), str(http[a]), spec.topic, spec.channel, deadline)
                for a in missing
            )
        )
        for address, problem in zip(missing, made, strict=True):
            numbers = found[address]
            if problem is None and isinstance(numbers, ChannelStats):
                found[address] = replace(numbers, channel_exists=True)
                self._stats.pop((str(http[address]), spec.topic), None)  # it has one more channel now
            elif problem is not None:
                log.warning("creating channel %s on nsqd %s: %s", spec.channel, address, problem)
        limits = await asyncio.gather(*(self._max_rdy_count(str(http[a]), deadline) for a in readable))
        return found, {a: limit for a, limit in zip(readable, limits, strict=True) if limit is not None}

    async def _topic_stats(
        self, http: str, topic: str, interval: float, deadline: float
    ) -> TopicStats | Unreadable:
        """This poll's read of one topic at one nsqd: shared by every consumer that asks within half
        an interval of it (they all reconcile on the same lookup answer)."""
        now = time.monotonic()
        if now - self._pruned > STATS_KEPT:
            self._stats = {k: v for k, v in self._stats.items() if now - v[0] < STATS_KEPT}
            self._pruned = now
        cached = self._stats.get((http, topic))
        if cached is None or now - cached[0] >= interval / 2:
            task = asyncio.get_running_loop().create_task(
                nsqd_stats.read(self._http(), http, topic, deadline)
            )
            cached = self._stats[(http, topic)] = (now, task)
            metrics.NSQD_STATS_READS.inc()
        return await asyncio.shield(cached[1])

    async def _max_rdy_count(self, http: str, deadline: float) -> int | None:
        known = self._max_rdy.get(http)
        if known is not None and time.monotonic() - known[0] < MAX_RDY_REFRESH:
            return known[1]
        value = await nsqd_stats.max_rdy_count(self._http(), http, deadline)
        self._max_rdy[http] = (time.monotonic(), value)
        return value

    def _lookup(self, slot: Slot) -> Lookup | None:
        if isinstance(slot.spec, SpecError):
            return None
        answers: list[LookupdAnswer] = []
        now = time.monotonic()
        for key in slot.groups:
            group = self.groups.get(key)
            if group is None or group.answer is None:
                answers.append(LookupFailure(key[0], "not answered yet"))
            elif now - group.answered_at > 2 * group.interval + group.deadline:
                answers.append(LookupFailure(key[0], f"no answer for {now - group.answered_at:.0f} s"))
            else:
                answers.append(group.answer)
        return Lookup(tuple(answers))

    def _views(self, slot: Slot) -> list[WorkerView]:
        """Live state, with what this consumer's last reconciles wrote and the watch has not shown yet."""
        indexed = {v.name: v for v in self.read_workers(slot.key)}
        slot.gone &= {v.uid for v in indexed.values()}
        views = {name: v for name, v in indexed.items() if v.uid not in slot.gone}
        for name, recent in list(slot.recent.items()):
            current = indexed.get(name)
            if current is not None and current.uid == recent.uid and current.generation >= recent.generation:
                del slot.recent[name]
            elif current is None or current.uid == recent.uid:
                views[name] = recent
            else:
                del slot.recent[name]
        return list(views.values())

    def _drifted(self, namespace: str, views: Iterable[WorkerView]) -> frozenset[str]:
        return frozenset(
            view.name
            for view in views
            if self.verdicts.get((namespace, view.name)) == (view.generation, True)
        )

    # -- plumbing ----------------------------------------------------------------------------------

    def _nudge(self, slot: Slot) -> None:
        slot.nudged = True
        slot.wake.set()

    def _respec(self, slot: Slot) -> None:
        self._unsubscribe(slot)
        slot.spec = parse(slot.body.get("spec"))
        self._subscribe(slot)
        self._nudge(slot)

    def _subscribe(self, slot: Slot) -> None:
        for key in slot.groups:
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = Group(key, interval=slot.interval)
            group.subscribers.add(slot.key)
            self._retime(group)
            if self.leader:
                self._start_group(group)
            if group.answer is not None:
                slot.wake.set()

    def _unsubscribe(self, slot: Slot) -> None:
        for key in slot.groups:
            group = self.groups.get(key)
            if group is None:
                continue
            group.subscribers.discard(slot.key)
            if not group.subscribers:
                if group.task is not None:
                    group.task.cancel()
                del self.groups[key]
            else:
                self._retime(group)

    def _retime(self, group: Group) -> None:
        intervals = [self.consumers[k].interval for k in group.subscribers if k in self.consumers]
        interval = min(intervals, default=group.interval)
        if interval != group.interval:
            group.interval = interval
            group.changed.set()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60))
        return self._session


def _plain(value: Any) -> Any:
    """A deep, plain copy of kopf's live body, safe to hand to another thread."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
