"""What to tell users through Kubernetes Events. Pure: the handlers post what this returns.

Events are for changes, not for states: a lookupd that stays down is reported once when it goes
down and once when it comes back, not on every poll (the conditions carry the current state).
Whoever may list events in the namespace reads them: URLs appear with their credentials redacted.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nsq_operator.lookupd import Lookup, redact
from nsq_operator.plan import Action, Create, Delete, Scale, Update
from nsq_operator.resource import API_VERSION, KIND, MANAGER
from nsq_operator.rollout import Summary

if TYPE_CHECKING:
    from nsq_operator.manifests import Owner

NORMAL = "Normal"
WARNING = "Warning"
MAX_MESSAGE = 1024  # the API server refuses longer event messages


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


def for_action(action: Action, error: str | None) -> Event:
    """One event per Deployment created, updated, scaled or deleted, or per attempt that failed."""
    verb = {Create: "Create", Update: "Update", Scale: "Scale", Delete: "Delete"}[type(action)]
    target = f"Deployment {action.name}" + (f" for nsqd {action.address}" if action.address else "")
    if error is not None:
        return Event(WARNING, f"{verb}Failed", f"Could not {verb.lower()} {target}: {error}")
    match action:
        case Create():
            count = (
                "its autoscaler's replicas" if action.replicas is None else f"{action.replicas} replica(s)"
            )
            return Event(NORMAL, "DeploymentCreated", f"Created {target} with {count}")
        case Update():
            return Event(NORMAL, "DeploymentUpdated", f"Updated {target}: {action.reason}")
        case Scale():
            why = f": {action.reason}" if action.reason else ""
            return Event(NORMAL, "DeploymentScaled", f"Scaled {target} to {action.replicas} replica(s){why}")
        case Delete():
            return Event(NORMAL, "DeploymentDeleted", f"Deleted {target}: {action.reason}")


def for_lookup(previously_failing: Collection[str], lookup: Lookup) -> list[Event]:
    """Warnings for lookupds that just started failing, notes for those that just recovered."""
    events = []
    failing = {f.lookupd: f.reason for f in lookup.failures}
    for lookupd, reason in failing.items():
        if lookupd not in previously_failing:
            events.append(Event(WARNING, "LookupdFailed", f"nsqlookupd {redact(lookupd)} failed: {reason}"))
    answered = {a.lookupd for a in lookup.answers} - failing.keys()
    for lookupd in sorted(answered & set(previously_failing)):
        events.append(Event(NORMAL, "LookupdRecovered", f"nsqlookupd {redact(lookupd)} answers again"))
    return events


def for_worker_problems(previous: Mapping[str, str], current: Mapping[str, str]) -> list[Event]:
    """A warning when a worker starts failing (or fails differently), a note when it recovers."""
    found = [
        Event(WARNING, "WorkerFailing", f"Worker for nsqd {address} is not running: {problem}")
        for address, problem in sorted(current.items())
        if previous.get(address) != problem
    ]
    return found + [
        Event(NORMAL, "WorkerRecovered", f"Worker for nsqd {address} no longer reports a problem")
        for address in sorted(previous.keys() - current.keys())
    ]


def for_unreadable_stats(previous: Mapping[str, str], current: Mapping[str, str]) -> list[Event]:
    """One warning when an nsqd's stats stop being readable (its replicas are held), one note when
    they are readable again; a reason that only changes its words is not news."""
    found = [
        Event(
            WARNING,
            "NsqdStatsUnreadable",
            f"Holding the replicas of nsqd {address}: {current[address]}",
        )
        for address in sorted(current.keys() - previous.keys())
    ]
    found += [
        Event(NORMAL, "NsqdStatsReadable", f"Stats of nsqd {address} are readable again; scaling resumes")
        for address in sorted(previous.keys() - current.keys())
    ]
    return found


def for_held_deletions(previously_held: Collection[str], held: Collection[str]) -> list[Event]:
    """A warning when lookupd's silence starts keeping workers that would otherwise be removed."""
    new = sorted(set(held) - set(previously_held))
    if not new:
        return []
    return [
        Event(
            WARNING,
            "DeletionHeld",
            f"Not deleting {', '.join(new)}: no nsqlookupd answers, so their nsqd may still be alive",
        )
    ]


def for_rollout(active: bool, waiting: int, stalled: Collection[str], summary: Summary) -> list[Event]:
    """A consumer's rollout of a new pod template: when it starts, when it starts waiting for the
    operator-wide budget, when one of its Deployments stalls, and when it completes. Not per poll:
    each is said when it becomes true (each Deployment written has its DeploymentUpdated as well)."""
    found: list[Event] = []
    budget = "no limit" if summary.limit <= 0 else f"at most {summary.limit} at a time, operator-wide"
    if summary.active and not active:
        count = summary.rolling + summary.waiting + len(summary.stalled)
        found.append(
            Event(
                NORMAL,
                "RolloutStarted",
                f"Rolling out a new pod template to {count} of {summary.total} worker Deployments ({budget})",
            )
        )
    if summary.waiting and not waiting:
        found.append(
            Event(
                NORMAL,
                "RolloutWaiting",
                f"{summary.waiting} worker Deployments keep their old pod template until the rollout "
                f"budget has room ({budget}); {summary.updated} of {summary.total} updated, "
                f"{summary.rolling} rolling",
            )
        )
    for name in sorted(set(summary.stalled) - set(stalled)):
        found.append(
            Event(
                WARNING,
                "RolloutStalled",
                f"Deployment {name} did not finish its rollout within its progress deadline "
                "(ProgressDeadlineExceeded); its place in the rollout budget goes to the next one",
            )
        )
    if active and not summary.active:
        found.append(
            Event(
                NORMAL,
                "RolloutComplete",
                f"All {summary.total} worker Deployments run the current pod template",
            )
        )
    return found


def body(owner: Owner, event: Event, now: datetime) -> dict[str, Any]:
    """The core/v1 Event about the NsqConsumer `owner` that `kubectl describe nsqc` shows."""
    when = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{owner.name}.", "namespace": owner.namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": owner.name,
            "namespace": owner.namespace,
            "uid": owner.uid,
        },
        "type": event.type,
        "reason": event.reason,
        "message": redact(event.message)[:MAX_MESSAGE],  # whoever may list events reads it
        "source": {"component": MANAGER},
        "reportingComponent": MANAGER,
        "reportingInstance": INSTANCE,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }


# Which operator said it, for `kubectl get events -o wide`; the pod's name in a pod.
INSTANCE = os.environ.get("POD_NAME") or socket.gethostname()
