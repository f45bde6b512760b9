"""The planner: from what lookupd says and what exists, the actions that make one worker per nsqd.

Pure and backend-neutral (no Kubernetes, no kopf): the Kubernetes backend runs a Deployment per
worker, the local backend a process, and both feed this function the same way. Level-based: the
plan depends only on the current producers, the current workers and the remembered grace state, so
running it twice, or from two operators at once, converges on the same result.

Safety rules:
- When no lookupd answered, the producer set is unknown: nothing is deleted and no grace clock starts.
- An nsqd that lookupd stops listing keeps its worker for the grace period (nsqd restarts, lookupd
  flaps); if it comes back within the grace, nothing happens at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Worker:
    """A worker that exists now, as the backend reports it."""

    name: str
    address: str | None  # the nsqd it consumes from; None when its record says nothing usable
    fingerprint: str | None  # the hash of the configuration it was made from
    replicas: int
    drifted: bool = False  # someone changed fields the operator owns (its image, its nsqd, ...)


@dataclass(frozen=True)
class NsqdRecord:
    """What the planner remembers about one nsqd between polls (kept in status by the k8s backend)."""

    address: str
    last_seen: datetime | None = None
    missing_since: datetime | None = None


@dataclass(frozen=True)
class Target:
    """What each worker should look like: its deterministic name, fingerprint and replica count.

    `replicas` is None when something else (an HPA, KEDA) owns the replica count: then the planner
    never plans a Scale, and creates and rewrites leave the count alone. `per_nsqd` overrides it
    nsqd by nsqd (the operator's own autoscaler), with the reason for each in `why`.
    """

    name: Callable[[str], str]
    fingerprint: Callable[[str], str]
    replicas: int | None
    per_nsqd: Mapping[str, int] = field(default_factory=dict)
    why: Mapping[str, str] = field(default_factory=dict)

    def replicas_for(self, address: str) -> int | None:
        return self.per_nsqd.get(address, self.replicas)


@dataclass(frozen=True)
class Create:
    name: str
    address: str
    replicas: int | None


UPDATE_CHANGED = "its spec changed"
UPDATE_DRIFTED = "fields the operator owns were changed by someone else"


@dataclass(frozen=True)
class Update:
    """The configuration changed (the fingerprints differ), or the worker drifted: rewrite it."""

    name: str
    address: str
    replicas: int | None
    reason: str = UPDATE_CHANGED


@dataclass(frozen=True)
class Scale:
    """Only the replica count differs (pause, resume, someone scaled it by hand)."""

    name: str
    address: str
    replicas: int
    reason: str = ""  # the autoscaler's, when it decided


@dataclass(frozen=True)
class Delete:
    name: str
    address: str | None
    reason: str


Action = Create | Update | Scale | Delete


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    nsqds: tuple[NsqdRecord, ...]  # every nsqd that keeps (or gets) a worker, sorted by address
    deletions_held: tuple[str, ...] = field(default=())  # workers not deleted because lookupd was unreachable


def plan(
    producers: frozenset[str] | None,
    workers: Iterable[Worker],
    records: Mapping[str, NsqdRecord],
    target: Target,
    now: datetime,
    grace: timedelta,
) -> Plan:
    """Work out the actions for one poll.

    producers: the union of what the lookupds that answered listed, or None when none answered.
    records: the previous poll's NsqdRecords by address (empty after a restart without state).
    """
    reachable = producers is not None
    seen = producers or frozenset()
    by_address: dict[str, Worker] = {}
    strays: list[Worker] = []
    for worker in sorted(workers, key=lambda w: w.name):
        if (
            worker.address is not None
            and worker.name == target.name(worker.address)
            and worker.address not in by_address
        ):
            by_address[worker.address] = worker
        else:
            strays.append(worker)

    actions: list[Action] = []
    kept: list[NsqdRecord] = []
    held: list[str] = []
    for address in sorted(seen | by_address.keys()):
        previous = records.get(address, NsqdRecord(address))
        existing = by_address.get(address)
        if address in seen:
            record = NsqdRecord(address, last_seen=now)
        elif not reachable:
            record = previous  # we know nothing new: keep every clock as it was
        else:
            missing_since = previous.missing_since or now
            if now - missing_since >= grace:
                if existing is not None:  # always: an address neither seen nor with a worker is not visited
                    actions.append(Delete(existing.name, address, "nsqd no longer listed by lookupd"))
                continue
            record = NsqdRecord(address, last_seen=previous.last_seen, missing_since=missing_since)
        kept.append(record)
        actions.extend(_converge(address, existing, target))

    for stray in strays:
        if reachable:
            actions.append(Delete(stray.name, stray.address, "not the worker this consumer wants"))
        else:
            held.append(stray.name)
    if not reachable:
        held.extend(w.name for a, w in by_address.items() if _overdue(records.get(a), now, grace))
    return Plan(tuple(actions), tuple(kept), tuple(sorted(held)))


def _converge(address: str, existing: Worker | None, target: Target) -> list[Action]:
    name = target.name(address)
    replicas = target.replicas_for(address)
    if existing is None:
        return [Create(name, address, replicas)]
    if existing.fingerprint != target.fingerprint(address):
        return [Update(name, address, replicas)]
    if existing.drifted:
        return [Update(name, address, replicas, UPDATE_DRIFTED)]
    if replicas is not None and existing.replicas != replicas:
        return [Scale(name, address, replicas, target.why.get(address, ""))]
    return []


def _overdue(record: NsqdRecord | None, now: datetime, grace: timedelta) -> bool:
    return record is not None and record.missing_since is not None and now - record.missing_since >= grace
