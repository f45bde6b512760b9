"""One poll of one NsqConsumer on Kubernetes: look, plan, act, report.

Blocking (requests and the Kubernetes client), so the handlers run it in a thread. It never raises
for the things a poll meets every day (a lookupd down, an API call refused): those end up in the
status, in events and in the log, and the next poll tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from nsq_operator import events, manifests, naming, pods, status
from nsq_operator.events import Event
from nsq_operator.kube import Kube, KubeError
from nsq_operator.lookupd import LookupCache, lookup
from nsq_operator.plan import Action, Create, Delete, NsqdRecord, Plan, Scale, Target, Update, plan
from nsq_operator.spec import DEFAULT_POLL_INTERVAL_SECONDS, ConsumerSpec, SpecError, parse

log = logging.getLogger(__name__)


@dataclass
class ConsumerState:
    """What one consumer's poll loop remembers between polls (lost on restart; status has the rest)."""

    records: dict[str, NsqdRecord] | None = None
    last_status: dict[str, Any] | None = None
    failing_lookupds: frozenset[str] = frozenset()
    held: tuple[str, ...] = ()
    spec_error: SpecError | None = None
    failures: tuple[str, ...] = ()
    problems: dict[str, str] = field(default_factory=dict)  # why a worker is not running, by nsqd
    pods_unreadable: bool = False


# Pods whose status is silent about why they are not ready get their events read, at most this many
# a poll, so a consumer with hundreds of starting pods costs a handful of calls, not hundreds.
MAX_EVENT_LOOKUPS = 3


@dataclass(frozen=True)
class PollResult:
    interval: float
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def poll(
    kube: Kube, cache: LookupCache, body: Mapping[str, Any], state: ConsumerState, now: datetime
) -> PollResult:
    """Reconcile the consumer in `body` once and say when to come back."""
    meta = body.get("metadata") or {}
    owner = manifests.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    generation = meta.get("generation")
    previous_status = state.last_status if state.last_status is not None else dict(body.get("status") or {})

    parsed = parse(body.get("spec"))
    name_problem = naming.consumer_name_problem(owner.name)
    if name_problem is not None:
        parsed = SpecError("metadata.name", name_problem)
    if isinstance(parsed, SpecError):
        emitted = [] if parsed == state.spec_error else [Event(events.WARNING, "InvalidSpec", str(parsed))]
        state.spec_error = parsed
        observation = status.Observation(owner.name, generation, now, spec_error=parsed)
        new_status = status.build(observation, previous_status)
        _write_status(kube, owner, state, previous_status, new_status, now)
        return PollResult(DEFAULT_POLL_INTERVAL_SECONDS, emitted, new_status)
    state.spec_error = None
    spec = parsed

    interval = spec.lookupd.poll_interval_seconds
    found = lookup(spec.lookupd.http_addresses, spec.topic, cache, max_age=interval / 2)
    emitted = events.for_lookup(state.failing_lookupds, found)
    state.failing_lookupds = frozenset(f.lookupd for f in found.failures)

    try:
        listed = kube.list_workers(owner.namespace, owner.name)
        deployments = [d for d in listed if manifests.owned_by(d, owner.uid)]
    except KubeError as error:
        log.warning("%s/%s: %s", owner.namespace, owner.name, error)
        observation = status.Observation(owner.name, generation, now, lookup=found, failures=(str(error),))
        new_status = status.build(observation, previous_status)
        _write_status(kube, owner, state, previous_status, new_status, now)
        return PollResult(interval, emitted, new_status)

    records = state.records if state.records is not None else status.records_from_status(previous_status)
    target = Target(
        name=lambda address: naming.worker_name(owner.name, address),
        fingerprint=lambda address: manifests.fingerprint(owner, spec, address),
        replicas=spec.replicas,
    )
    planned = plan(
        found.producers,
        map(manifests.read_worker, deployments),
        records,
        target,
        now,
        timedelta(seconds=spec.nsqd_removal_grace_seconds),
    )
    emitted += events.for_held_deletions(state.held, planned.deletions_held)
    state.held = planned.deletions_held

    by_name = {d["metadata"]["name"]: d for d in deployments}
    kept = {r.address: r for r in planned.nsqds}
    failures: list[str] = []
    for action in planned.actions:
        changed, problem = _execute(kube, owner, spec, action, by_name)
        if problem is not None:
            failures.append(problem)
            if isinstance(action, Delete) and action.address and action.address in records:
                kept[action.address] = records[action.address]  # keep its grace clock for the retry
        if (changed and problem is None) or (problem is not None and problem not in state.failures):
            emitted.append(events.for_action(action, problem))
    state.failures = tuple(failures)
    state.records = kept

    ready = {name: manifests.ready_replicas(d) for name, d in by_name.items()}
    short = [
        naming.nsqd_hash(owner.name, address)
        for name, d in by_name.items()
        if ready[name] < spec.replicas and (address := manifests.read_worker(d).address) is not None
    ]
    problems = _worker_problems(kube, owner, short, state) if short else {}
    emitted += events.for_worker_problems(state.problems, problems)
    state.problems = problems

    observation = status.Observation(
        owner.name,
        generation,
        now,
        lookup=found,
        plan=_with_records(planned, kept),
        replicas=spec.replicas,
        paused=spec.paused,
        ready=ready,
        failures=tuple(failures),
        problems=problems,
    )
    new_status = status.build(observation, previous_status)
    _write_status(kube, owner, state, previous_status, new_status, now)
    return PollResult(interval, emitted, new_status)


def _execute(
    kube: Kube,
    owner: manifests.Owner,
    spec: ConsumerSpec,
    action: Action,
    existing: Mapping[str, Mapping[str, Any]],
) -> tuple[bool, str | None]:
    """Carry out one action: whether it changed anything, and the error as a sentence if it failed.

    A create that meets an existing Deployment (another operator, or a retry) changed nothing.
    """
    changed = True
    try:
        match action:
            case Create():
                changed = kube.create(manifests.deployment(owner, spec, action.address))
                if not changed:
                    squatter = _squatter(kube, owner, action.name)
                    if squatter is not None:
                        return False, squatter
            case Update():
                kube.replace(existing[action.name], manifests.deployment(owner, spec, action.address))
            case Scale():
                kube.scale(owner.namespace, action.name, action.replicas)
            case Delete():
                uid = existing.get(action.name, {}).get("metadata", {}).get("uid")
                kube.delete(owner.namespace, action.name, uid)
    except KubeError as error:
        log.warning("%s/%s: %s", owner.namespace, owner.name, error)
        return False, str(error)
    log.info("%s/%s: %s%s", owner.namespace, owner.name, action, "" if changed else " (already done)")
    return changed, None


def _worker_problems(
    kube: Kube, owner: manifests.Owner, nsqds: list[str], state: ConsumerState
) -> dict[str, str]:
    """Why workers are not running, by nsqd, read from the pods of the nsqd hashes `nsqds`.

    Reading pods is diagnosis, not control: a failure (say, RBAC from an older chart without pod
    access) is logged once, keeps what the last successful read said, and never fails the poll.
    """
    try:
        listed = kube.list_worker_pods(owner.namespace, owner.name, nsqds)
        warnings = {
            name: kube.list_pod_warnings(owner.namespace, name)
            for name in pods.needing_events(listed, MAX_EVENT_LOOKUPS)
        }
    except KubeError as error:
        if not state.pods_unreadable:
            log.warning("%s/%s: cannot say why workers are not ready: %s", owner.namespace, owner.name, error)
        state.pods_unreadable = True
        return dict(state.problems)
    state.pods_unreadable = False
    return pods.problems_by_nsqd(listed, warnings)


def _squatter(kube: Kube, owner: manifests.Owner, name: str) -> str | None:
    """Why a create that met an existing Deployment is not done: that Deployment is not this consumer's.

    A retry or a second operator leaves a Deployment this consumer controls, and that is success. Any
    other (a user's, or one of a deleted same-named consumer that garbage collection has not reached
    yet) would be counted as this nsqd's worker while it consumes nothing, so it is reported instead.
    """
    existing = kube.get(owner.namespace, name)
    if existing is None or manifests.owned_by(existing, owner.uid):
        return None
    refs = existing.get("metadata", {}).get("ownerReferences") or []
    controllers = [f"{r.get('kind')} {r.get('name')} uid {r.get('uid')}" for r in refs if r.get("controller")]
    controller = controllers[0] if controllers else "none"
    return (
        f"Deployment {name} already exists and is not controlled by this NsqConsumer "
        f"(its controller: {controller}); delete or rename it"
    )


def _with_records(planned: Plan, kept: Mapping[str, NsqdRecord]) -> Plan:
    """The plan with the nsqd records that survived execution (a failed delete keeps its record)."""
    return replace(planned, nsqds=tuple(kept[a] for a in sorted(kept)))


def _write_status(
    kube: Kube,
    owner: manifests.Owner,
    state: ConsumerState,
    previous: Mapping[str, Any],
    new: dict[str, Any],
    now: datetime,
) -> None:
    if not status.needs_write(previous, new, now):
        return
    try:
        kube.patch_status(owner.namespace, owner.name, new)
    except KubeError as error:
        log.warning("%s/%s: %s", owner.namespace, owner.name, error)
        return
    state.last_status = {**previous, **new}
