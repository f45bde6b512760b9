"""Why a worker pod is not running, in one sentence, from the pod's own status. Pure.

The operator may not read Secrets or node logs (least privilege), but the kubelet and the scheduler
write what stops a pod into the pod: a Secret that does not exist (CreateContainerConfigError:
secret "x" not found), an image that cannot be pulled (ErrImagePull), a worker that exits at once
(CrashLoopBackOff, with the worker's last words as the termination message), a pod no node can fit
(Unschedulable). Copying that into the NsqConsumer's status is what lets `kubectl describe nsqc`
say why workers are not ready, instead of a bare "0 of 1 ready".

Whoever may read the NsqConsumer or list events reads what is copied, so a termination message is
copied only from a container whose `terminationMessagePolicy` is `File` (what the worker itself
wrote to /dev/termination-log: why it stopped, never message data). With `FallbackToLogsOnError`
(workers of operators before this one) the message may be the tail of the log, which can quote
message bodies: only the exit code is copied then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nsq_operator.resource import ANNOTATION_NSQD_ADDRESS

# Waiting reasons that are a pod on its way up, not a problem.
STARTING = frozenset({"ContainerCreating", "PodInitializing"})
MAX_PROBLEM = 300  # characters: the kubelet's messages can carry whole log tails
# Warning events that never keep a worker from running: a cluster without DNS (the worker reaches
# nsqd by address) makes the kubelet warn on every pod, and would hide the real reason.
# BackOff repeats what the container's status says (CrashLoopBackOff, ImagePullBackOff) with less.
HARMLESS_WARNINGS = frozenset({"MissingClusterDNS", "DNSConfigForming", "BackOff"})
CRASH_LOOP_RESTARTS = 2  # a container that failed this often and is not ready is crash-looping
MESSAGE_FROM_FILE = "File"  # the only terminationMessagePolicy whose message is copied


def problem(pod: Mapping[str, Any], warnings: Iterable[Mapping[str, Any]] = ()) -> str | None:
    """What keeps this pod from running its worker, or None when nothing (known) does.

    The pod's status comes first. `warnings` (the pod's Warning events) fill the gaps the status
    leaves: a Secret volume that cannot be mounted keeps the container in ContainerCreating and is
    told only in a FailedMount event; a failing readiness probe only in an Unhealthy one.
    """
    if _leaving(pod):
        return None  # on its way out: a drain, not a failure
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return _cap(_join(condition.get("reason") or "Unschedulable", condition.get("message")))
    policies = _message_policies(pod)
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        found = _container_problem(container, policies.get(str(container.get("name")), MESSAGE_FROM_FILE))
        if found is not None:
            return _cap(found)
    telling = [w for w in warnings if not _harmless(w)]
    latest = max(telling, key=_event_time, default=None)
    if latest is not None and latest.get("reason"):
        return _cap(_join(str(latest["reason"]), latest.get("message")))
    return None


def ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def problems_by_nsqd(
    pods: Iterable[Mapping[str, Any]], warnings: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
) -> dict[str, str]:
    """One problem per nsqd address (the first pod's, by name, so the answer is stable).

    `warnings` holds the Warning events of some pods, by pod name.
    """
    found: dict[str, str] = {}
    for pod in sorted(pods, key=_name):
        address = nsqd_address(pod)
        if address is None or address in found:
            continue
        said = problem(pod, (warnings or {}).get(_name(pod), []))
        if said is not None:
            found[address] = f"pod {_name(pod)}: {said}"
    return found


def needing_events(pods: Iterable[Mapping[str, Any]], limit: int) -> list[str]:
    """Not-ready pods whose status says nothing: the ones worth asking for their events (at most `limit`)."""
    quiet = [
        _name(pod)
        for pod in sorted(pods, key=_name)
        if not ready(pod) and problem(pod) is None and not _leaving(pod)
    ]
    return quiet[:limit]


def nsqd_address(pod: Mapping[str, Any]) -> str | None:
    address = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_NSQD_ADDRESS)
    return address if isinstance(address, str) else None


def _leaving(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name"))


def _event_time(event: Mapping[str, Any]) -> str:
    """RFC 3339 strings in UTC sort as times; the newest of the fields an event may carry."""
    series = event.get("series") or {}
    stamps = (series.get("lastObservedTime"), event.get("lastTimestamp"), event.get("eventTime"),
              (event.get("metadata") or {}).get("creationTimestamp"))  # fmt: skip
    return max((s for s in stamps if isinstance(s, str)), default="")


def _message_policies(pod: Mapping[str, Any]) -> dict[str, str]:
    """Each container's terminationMessagePolicy, by name (the API server defaults it to File)."""
    spec = pod.get("spec") or {}
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    return {
        str(c.get("name")): str(c.get("terminationMessagePolicy") or MESSAGE_FROM_FILE)
        for c in containers
        if isinstance(c, Mapping)
    }


def _container_problem(container: Mapping[str, Any], policy: str = MESSAGE_FROM_FILE) -> str | None:
    waiting = (container.get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    failed = ((container.get("lastState") or {}).get("terminated") or {}).get("exitCode") not in (None, 0)
    if (
        not reason
        and failed
        and not container.get("ready")
        and container.get("restartCount", 0) >= CRASH_LOOP_RESTARTS
    ):
        # Between two back-offs the kubelet runs it again for a moment (no waiting reason): still
        # the same crash loop, and saying so keeps the status from flapping on every restart.
        reason = "CrashLoopBackOff"
    if not reason or reason in STARTING:
        return None
    # CrashLoopBackOff's message is the growing back-off delay: noise that would rewrite the status
    # on every restart. The exit code and the worker's last words say more.
    said = reason if reason == "CrashLoopBackOff" else _join(reason, waiting.get("message"))
    last = (container.get("lastState") or {}).get("terminated") or {}
    if last:
        exited = f"last exit code {last.get('exitCode')}"
        said = _join(f"{said}; {exited}", _own_words(last.get("message"), policy))
    return said


def _harmless(warning: Mapping[str, Any]) -> bool:
    """A warning that says nothing about why a worker is not running.

    A startup probe that fails while the worker imports is a pod on its way up; one that keeps failing
    gets the container killed, and the restart is then in the pod's own status.
    """
    if warning.get("reason") in HARMLESS_WARNINGS:
        return True
    message = warning.get("message")
    return (
        warning.get("reason") == "Unhealthy"
        and isinstance(message, str)
        and message.startswith("Startup probe")
    )


def _join(reason: str, message: object) -> str:
    return f"{reason}: {message}" if isinstance(message, str) and message.strip() else reason


def _own_words(message: object, policy: str) -> str | None:
    """The termination message when the container itself wrote it (policy File), on one line.

    Under any other policy the kubelet may have put the log's tail there instead: nothing is taken.
    """
    if policy != MESSAGE_FROM_FILE or not isinstance(message, str) or not message.strip():
        return None
    return " ".join(message.split())


def _cap(text: str) -> str:
    text = " ".join(text.split())  # one line, whatever the kubelet wrote
    return text if len(text) <= MAX_PROBLEM else text[: MAX_PROBLEM - 1] + "…"
