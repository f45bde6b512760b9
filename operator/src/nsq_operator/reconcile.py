"""One reconcile of one NsqConsumer on Kubernetes: plan, act, report.

The scheduler hands in everything read elsewhere: the consumer as the watch last saw it, what its
lookupds said (asked once for every consumer of the topic), and its Deployments from live state.
So a reconcile that changes nothing makes no API call at all. Blocking (the Kubernetes client), so
the scheduler runs it in a thread, with a deadline it checks between calls, and a `still_wanted`
it asks before every write: nothing is created for a consumer that is being deleted or is gone.

It never raises for what a reconcile meets every day (a lookupd down, an API call refused): those
end up in the status, in events and in the log, and the next reconcile tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from nsq_operator import autoscale, events, live, manifests, metrics, naming, pods, rollout, status
from nsq_operator.autoscale import NsqdStats, Recommendation, Unreadable
from nsq_operator.events import Event
from nsq_operator.kube import Kube, KubeError
from nsq_operator.lookupd import Lookup, redact
from nsq_operator.plan import UPDATE_CHANGED, Action, Create, Delete, NsqdRecord, Scale, Target, Update, plan
from nsq_operator.spec import MAX_RDY_COUNT, ConsumerSpec, SpecError, parse
from nsq_operator.status import NsqdScaling

log = logging.getLogger(__name__)

# Pods whose status is silent about why they are not ready get their events read, at most this many
# a reconcile, so a consumer with hundreds of starting pods costs a handful of calls, not hundreds.
MAX_EVENT_LOOKUPS = 3


@dataclass
class ConsumerState:
    """What one consumer's reconciles remember between them; seeded from the status after a restart.

    Seeding is what keeps a restarted operator from announcing again what it already announced
    (a lookupd down, a worker failing, a held deletion): events are for changes.
    """

    seeded: bool = False
    records: dict[str, NsqdRecord] | None = None
    last_status: dict[str, Any] | None = None
    failing_lookupds: frozenset[str] = frozenset()
    held: tuple[str, ...] | None = None  # None: take the first reconcile's as already announced
    spec_error: str | None = None
    failures: tuple[str, ...] = ()
    problems: dict[str, str] = field(default_factory=dict)  # why a worker is not running, by nsqd
    pods_unreadable: bool = False
    # The autoscaler's memory, by nsqd: its recent recommendations (the stabilization window), the
    # reason of its last decision that changed something, and why stats could not be read.
    recommendations: dict[str, tuple[Recommendation, ...]] = field(default_factory=dict)
    scale_reasons: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    last_write: float = -1e9  # time.monotonic() of the last status write
    # The rollout of a new pod template: the Deployments it concerns (None: no rollout), whether the
    # names are still to be read from what rolls (seeded from a status that said a rollout ran), and
    # what was last said about it.
    rollout: set[str] | None = None
    rollout_unknown: str | None = None  # seeded: the reason of the RolloutProgressing it said
    rollout_waiting: int = 0
    rollout_stalled: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Inputs:
    """Everything one reconcile works from, read by the scheduler on its own thread."""

    body: Mapping[str, Any]  # the NsqConsumer, a plain copy
    lookup: Lookup | None  # None when the spec is invalid (nothing was asked)
    workers: Sequence[live.WorkerView]  # its worker Deployments as live state has them
    drifted: frozenset[str]  # names of those that lost fields the operator owns
    now: datetime
    deadline: float  # time.monotonic() past which no further API call is started
    still_wanted: Callable[[], bool]  # False once the consumer is being deleted or gone
    stats: Mapping[str, NsqdStats] = field(default_factory=dict)  # by nsqd, read when autoscaling
    max_rdy_counts: Mapping[str, int] = field(default_factory=dict)  # by nsqd, where it was read
    budget: rollout.Budget = rollout.UNLIMITED  # the operator-wide places for rolling Deployments


@dataclass(frozen=True)
class Outcome:
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    written: list[dict[str, Any]] = field(default_factory=list)  # Deployments as the API returned them
    deleted: list[str] = field(default_factory=list)  # uids
    failed: bool = False
    timed_out: bool = False
    abandoned: bool = False  # the consumer went away meanwhile: nothing more was done
    scaling: dict[str, NsqdScaling] = field(default_factory=dict)  # the autoscaler's, by nsqd


class _OutOfTimeError(Exception):
    pass


class _NotWantedError(Exception):
    pass


def reconcile(kube: Kube, inputs: Inputs, state: ConsumerState) -> Outcome:
    """Converge one consumer's Deployments on what its lookupds say, then report."""
    body = inputs.body
    meta = body.get("metadata") or {}
    owner = manifests.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    generation = meta.get("generation")
    previous_status = state.last_status if state.last_status is not None else dict(body.get("status") or {})

    parsed = parse(body.get("spec"))
    name_problem = naming.consumer_name_problem(owner.name)
    if name_problem is not None:
        parsed = SpecError("metadata.name", name_problem)
    if not state.seeded:
        _seed(state, previous_status, parsed)
    if isinstance(parsed, SpecError):
        said = redact(str(parsed))  # as the status shows it, so a restart's seed compares equal
        emitted = [] if said == state.spec_error else [Event(events.WARNING, "InvalidSpec", said)]
        state.spec_error = said
        observation = status.Observation(owner.name, generation, inputs.now, spec_error=parsed, applied=False)
        new_status = status.build(observation, previous_status)
        _finish(kube, owner, state, previous_status, new_status, emitted, inputs)
        return Outcome(emitted, new_status)
    state.spec_error = None
    spec = parsed
    found = inputs.lookup if inputs.lookup is not None else Lookup(())

    emitted = events.for_lookup(state.failing_lookupds, found)
    state.failing_lookupds = frozenset(f.lookupd for f in found.failures)

    mine = [w for w in inputs.workers if w.controller_uid == owner.uid]
    records = state.records if state.records is not None else status.records_from_status(previous_status)
    scaling = _autoscale(spec, found, mine, state, inputs)
    target = Target(
        name=lambda address: naming.worker_name(owner.name, address),
        fingerprint=lambda address: manifests.fingerprint(owner, spec, address),
        replicas=spec.replicas,
        per_nsqd={a: s.desired for a, s in scaling.items()},
        why={a: s.reason for a, s in scaling.items()},
    )
    planned = plan(
        found.producers,
        (w.worker(drifted=w.name in inputs.drifted) for w in mine),
        records,
        target,
        inputs.now,
        timedelta(seconds=spec.nsqd_removal_grace_seconds),
    )
    if state.held is None:
        state.held = planned.deletions_held
    emitted += events.for_held_deletions(state.held, planned.deletions_held)
    state.held = planned.deletions_held

    by_name = {w.name: w for w in mine}
    kept = {r.address: r for r in planned.nsqds}
    failures: list[str] = []
    written: list[dict[str, Any]] = []
    deleted: list[str] = []
    timed_out = False
    templated: set[str] = set()  # Deployments whose new pod template rolls pods
    waiting: list[str] = []  # of those, the ones that found the budget full
    try:
        for action in planned.actions:
            _check(inputs)
            budgeted = _rolls_pods(owner, spec, action, by_name)
            if budgeted and not inputs.budget.acquire((owner.namespace, action.name)):
                # Every place is taken: it keeps its old template, at the replicas it should have.
                templated.add(action.name)
                waiting.append(action.name)
                held = _held_scale(action, by_name)
                if held is None:
                    continue
                action = held
                result, changed, problem = _scale_only(kube, owner, held)
            else:
                result, changed, problem = _execute(kube, owner, spec, action, by_name)
            if result is not None:
                written.append(result)
            if budgeted and action.name not in waiting:
                templated.add(action.name)
                key = (owner.namespace, action.name)
                if result is not None:
                    inputs.budget.written(key, live.view(result).generation)
                    metrics.ROLLOUTS_STARTED.inc()
                else:
                    inputs.budget.release(key)
            if isinstance(action, Delete) and problem is None and action.name in by_name:
                deleted.append(by_name[action.name].uid)
            if problem is not None:
                failures.append(problem)
                if isinstance(action, Delete) and action.address and action.address in records:
                    kept[action.address] = records[action.address]  # keep its grace clock for the retry
            if changed or (problem is not None and problem not in state.failures):
                emitted.append(events.for_action(action, problem))
    except _NotWantedError:
        log.info("%s/%s: being deleted; stopping this reconcile", owner.namespace, owner.name)
        return Outcome(written=written, deleted=deleted, abandoned=True)
    except _OutOfTimeError:
        timed_out = True
        failures.append("the reconcile ran past its deadline; the next one carries on")
    state.failures = tuple(failures)
    state.records = kept
    summary = _rollout_summary(mine, written, deleted, templated, waiting, state, inputs.budget)
    emitted += events.for_rollout(
        state.rollout is not None, state.rollout_waiting, state.rollout_stalled, summary
    )
    state.rollout = (state.rollout or set()) | templated if summary.active else None
    state.rollout_waiting = summary.waiting
    state.rollout_stalled = frozenset(summary.stalled)

    replicas = {w.name: _wanted(spec, w, scaling) for w in mine}
    ready = {w.name: w.ready_replicas for w in mine}
    short = [
        naming.nsqd_hash(owner.name, w.address)
        for w in mine
        if w.address is not None and w.ready_replicas < replicas[w.name]
    ]
    problems = _worker_problems(kube, owner, short, state, inputs) if short and not timed_out else {}
    emitted += events.for_worker_problems(state.problems, problems)
    state.problems = problems
    unreadable = {a: s.unreadable for a, s in scaling.items() if s.unreadable is not None}
    emitted += events.for_unreadable_stats(state.unreadable, unreadable)
    state.unreadable = unreadable

    observation = status.Observation(
        owner.name,
        generation,
        inputs.now,
        lookup=found,
        plan=replace(planned, nsqds=tuple(kept[a] for a in sorted(kept))),
        replicas=spec.replicas or 0,
        desired_total=_desired_total(spec, replicas, scaling, kept),
        paused=spec.paused,
        scaling=scaling if spec.autoscaled is not None else None,
        ready=ready,
        failures=tuple(failures),
        problems=problems,
        applied=not failures,
        rollout=summary,
    )
    new_status = status.build(observation, previous_status)
    _finish(kube, owner, state, previous_status, new_status, emitted, inputs)
    return Outcome(
        emitted, new_status, written, deleted, failed=bool(failures), timed_out=timed_out, scaling=scaling
    )


def _autoscale(
    spec: ConsumerSpec,
    found: Lookup,
    mine: Sequence[live.WorkerView],
    state: ConsumerState,
    inputs: Inputs,
) -> dict[str, status.NsqdScaling]:
    """The autoscaler's decision for every nsqd that is listed or still has a worker; {} when off."""
    settings = spec.autoscaled
    if settings is None:
        state.recommendations.clear()
        state.scale_reasons.clear()
        return {}
    current = {w.address: w.replicas for w in mine if w.address is not None}
    listed = found.producers or frozenset()
    addresses = sorted(listed | current.keys())
    now = inputs.now.timestamp()
    decided: dict[str, status.NsqdScaling] = {}
    for address in addresses:
        had = current.get(address)
        if address not in listed and had is not None:
            # Not listed now (leaving, in its grace, or no lookupd answered: LookupdReachable says
            # so): its numbers are not asked for. Held as it is, quietly; the window restarts.
            state.recommendations.pop(address, None)
            reason = state.scale_reasons.setdefault(address, f"held at {had}: not listed by nsqlookupd")
            decided[address] = status.NsqdScaling(None, None, had, had, reason)
            continue
        stats = inputs.stats.get(address) or Unreadable("its /stats was not read this poll")
        max_rdy = inputs.max_rdy_counts.get(address, MAX_RDY_COUNT)  # unread: nsqd's default
        ceiling = autoscale.feedable(max_rdy, spec.worker.max_in_flight)
        decision = autoscale.decide(
            settings, stats, had, state.recommendations.get(address, ()), now, ceiling
        )
        state.recommendations[address] = decision.history
        if had is None or decision.replicas != had or isinstance(stats, Unreadable):
            state.scale_reasons[address] = decision.reason
        reason = state.scale_reasons.setdefault(address, decision.reason)
        decided[address] = status.NsqdScaling(
            depth=None if isinstance(stats, Unreadable) else stats.depth,
            in_flight=None if isinstance(stats, Unreadable) else stats.in_flight,
            current=had,
            desired=decision.replicas,
            reason=reason,
            unreadable=stats.reason if isinstance(stats, Unreadable) else None,
        )
    for gone in set(state.recommendations) - set(addresses):
        del state.recommendations[gone]
    for gone in set(state.scale_reasons) - set(addresses):
        del state.scale_reasons[gone]
    return decided


def _wanted(spec: ConsumerSpec, worker: live.WorkerView, scaling: Mapping[str, status.NsqdScaling]) -> int:
    """The replicas a worker Deployment should have: the spec's, the autoscaler's, or its own."""
    if spec.replicas is not None:
        return spec.replicas
    decided = scaling.get(worker.address) if worker.address is not None else None
    if decided is not None:
        return decided.desired
    return worker.replicas or 0


def _desired_total(
    spec: ConsumerSpec,
    replicas: Mapping[str, int],
    scaling: Mapping[str, NsqdScaling],
    kept: Mapping[str, NsqdRecord],
) -> int | None:
    """Workers wanted over every nsqd: None when it is simply the nsqd count times spec.replicas;
    the autoscaler's decisions for the nsqd that keep a worker; else the counts the Deployments have."""
    if spec.replicas is not None:
        return None
    if scaling:
        return sum(s.desired for address, s in scaling.items() if address in kept)
    return sum(replicas.values())


def _rolls_pods(
    owner: manifests.Owner, spec: ConsumerSpec, action: Action, existing: Mapping[str, live.WorkerView]
) -> bool:
    """Whether this action writes a new pod template to an existing Deployment with pods to roll.

    Only a changed spec (or operator) does: creations and deletions never wait, nor does putting back
    fields someone else changed (drift), nor a change that leaves the pod template as it is.
    """
    if not isinstance(action, Update) or action.reason != UPDATE_CHANGED:
        return False
    worker = existing.get(action.name)
    if worker is None:
        return False
    if worker.template_hash == manifests.template_hash(owner, spec, action.address):
        return False
    return rollout.needs_place(worker.replicas, action.replicas)


def _held_scale(action: Action, existing: Mapping[str, live.WorkerView]) -> Scale | None:
    """What to write to a Deployment whose new template waits for the budget: its replica count
    alone, when that is to change (a pause, the autoscaler), else nothing."""
    worker = existing[action.name]
    if isinstance(action, Delete) or action.replicas is None or worker.replicas == action.replicas:
        return None
    why = "its new pod template waits for the rollout budget"
    return Scale(action.name, action.address, action.replicas, why)


def _rollout_summary(
    mine: Sequence[live.WorkerView],
    written: Sequence[Mapping[str, Any]],
    deleted: Sequence[str],
    templated: set[str],
    waiting: Sequence[str],
    state: ConsumerState,
    budget: rollout.Budget,
) -> rollout.Summary:
    """Where this consumer's rollout stands after this reconcile's writes."""
    after = {w.name: w for w in mine if w.uid not in deleted}
    for body in written:
        view = live.view(body)
        after[view.name] = view
    if state.rollout_unknown is not None:  # the last operator said a rollout ran: whatever rolls now
        if state.rollout_unknown == rollout.REASON_STALLED:  # said so already
            state.rollout_stalled = frozenset(n for n, w in after.items() if w.stalled)
        state.rollout_unknown = None
        state.rollout = (state.rollout or set()) | {n for n, w in after.items() if w.rolling or w.stalled}
    names = ((state.rollout or set()) | templated) & after.keys()
    held = set(waiting)
    rolling = [n for n in names if n not in held and after[n].rolling]
    stalled = sorted(n for n in names if n not in held and after[n].stalled)
    return rollout.Summary(len(after), len(rolling), len(held), tuple(stalled), budget.limit)


def _scale_only(
    kube: Kube, owner: manifests.Owner, action: Scale
) -> tuple[dict[str, Any] | None, bool, str | None]:
    """Write only the replica count of a Deployment whose new template waits for the budget."""
    try:
        written = kube.scale(owner.namespace, action.name, action.replicas)
    except KubeError as error:
        log.warning("%s/%s: %s", owner.namespace, owner.name, error)
        return None, False, str(error)
    log.info("%s/%s: %s", owner.namespace, owner.name, action)
    return written, True, None


def _check(inputs: Inputs) -> None:
    if not inputs.still_wanted():
        raise _NotWantedError
    if time.monotonic() > inputs.deadline:
        raise _OutOfTimeError


def _seed(state: ConsumerState, previous: Mapping[str, Any], parsed: ConsumerSpec | SpecError) -> None:
    """What the last operator already said, as the status it left shows it."""
    state.seeded = True
    spec_valid = status.condition(previous, status.SPEC_VALID) or {}
    if spec_valid.get("status") == "False":
        state.spec_error = str(spec_valid.get("message"))
    reachable = status.condition(previous, status.LOOKUPD_REACHABLE) or {}
    message = str(reachable.get("message") or "")
    if isinstance(parsed, ConsumerSpec):
        # The status shows each lookupd redacted (an older operator's status: as written).
        state.failing_lookupds = frozenset(
            a for a in parsed.lookupd.http_addresses if f"{redact(a)}: " in message or f"{a}: " in message
        )
    ready = status.condition(previous, status.READY) or {}
    if ready.get("reason") == "ReconcileFailed":
        state.failures = tuple(str(ready.get("message") or "").split("; "))
    if reachable.get("status") != "False":
        state.held = ()
    said = status.condition(previous, status.ROLLOUT_PROGRESSING) or {}
    if said.get("status") == "True":  # a rollout ran: no second RolloutStarted, and a RolloutComplete
        state.rollout, state.rollout_unknown = set(), str(said.get("reason"))
        state.rollout_waiting = 1 if said.get("reason") == rollout.REASON_WAITING else 0
    state.problems = {
        entry["address"]: entry["problem"]
        for entry in previous.get("nsqds") or []
        if isinstance(entry, Mapping) and isinstance(entry.get("problem"), str) and "address" in entry
    }


def _execute(
    kube: Kube,
    owner: manifests.Owner,
    spec: ConsumerSpec,
    action: Action,
    existing: Mapping[str, live.WorkerView],
) -> tuple[dict[str, Any] | None, bool, str | None]:
    """Carry out one action: the Deployment as the API returned it (None for a delete or a failure),
    whether this changed anything (worth an event), and the error as a sentence if it failed.

    A create that meets an existing Deployment of this consumer (live state had not seen it yet, or
    a second operator made it) applies instead, and is not news; one that meets somebody else's is
    reported, never taken over.
    """
    written: dict[str, Any] | None = None
    changed = True
    try:
        match action:
            case Create():
                desired = manifests.deployment(owner, spec, action.address, action.replicas)
                written = kube.create(desired)
                if written is None:
                    squatter = _squatter(kube, owner, action.name)
                    if squatter is not None:
                        return None, False, squatter
                    written, changed = kube.apply(desired), False
            case Update() | Scale():
                written = kube.apply(manifests.deployment(owner, spec, action.address, action.replicas))
            case Delete():
                worker = existing.get(action.name)
                kube.delete(owner.namespace, action.name, worker.uid if worker else None)
    except KubeError as error:
        log.warning("%s/%s: %s", owner.namespace, owner.name, error)
        return None, False, str(error)
    log.info("%s/%s: %s%s", owner.namespace, owner.name, action, "" if changed else " (it existed already)")
    return written, changed, None


def _worker_problems(
    kube: Kube, owner: manifests.Owner, nsqds: list[str], state: ConsumerState, inputs: Inputs
) -> dict[str, str]:
    """Why workers are not running, by nsqd, read from the pods of the nsqd hashes `nsqds`.

    Reading pods is diagnosis, not control: a failure (say, RBAC from an older chart without pod
    access) is logged once, keeps what the last successful read said, and never fails the reconcile.
    """
    if time.monotonic() > inputs.deadline:
        return dict(state.problems)
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

    One this consumer controls (live state had not caught up, or a second operator) is success. Any
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


def _finish(
    kube: Kube,
    owner: manifests.Owner,
    state: ConsumerState,
    previous: Mapping[str, Any],
    new: dict[str, Any],
    emitted: list[Event],
    inputs: Inputs,
) -> None:
    """Write the status (when it says something new) and post the events, unless the consumer went."""
    if not inputs.still_wanted():
        return
    for event in emitted:
        try:
            kube.post_event(owner.namespace, events.body(owner, event, inputs.now))
        except KubeError as error:
            log.warning("%s/%s: %s", owner.namespace, owner.name, error)
    refresh = (
        status.figures_changed(previous, new)
        and time.monotonic() - state.last_write >= status.FIGURES_REFRESH_SECONDS
    )
    if not (status.needs_write(previous, new) or refresh):
        return
    try:
        kube.patch_status(owner.namespace, owner.name, new)
    except KubeError as error:
        log.warning("%s/%s: %s", owner.namespace, owner.name, error)
        return
    state.last_status = {**previous, **new}
    state.last_write = time.monotonic()
