"""What exists: the operator's compact view of its worker Deployments, as the watch reports them. Pure.

The watch delivers whole Deployments; the operator keeps only what planning and status need (a few
hundred bytes each, not the ten-odd kilobytes of a parsed body), so ten thousand workers stay cheap.
Whether a Deployment drifted from what the operator wrote is judged when its event arrives, against
the consumer's spec at that moment, and kept as one boolean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nsq_operator import drift, manifests, rollout
from nsq_operator.plan import Worker
from nsq_operator.resource import (
    ANNOTATION_NSQD_ADDRESS,
    ANNOTATION_SPEC_HASH,
    ANNOTATION_TEMPLATE_HASH,
    LABEL_CONSUMER,
)
from nsq_operator.spec import ConsumerSpec

ConsumerKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker Deployment, as much of it as the operator needs."""

    namespace: str
    name: str
    uid: str
    consumer: str
    controller_uid: str | None
    address: str | None
    fingerprint: str | None
    replicas: int | None  # spec.replicas as written; None when unset
    ready_replicas: int
    generation: int
    template_hash: str | None = None  # of the pod template the operator last wrote; None: unknown
    progress: rollout.Progress = rollout.NO_PROGRESS  # its rollout, as its status tells it

    @property
    def rolling(self) -> bool:
        return rollout.in_progress(self.progress)

    @property
    def stalled(self) -> bool:
        return rollout.stalled(self.progress)

    @property
    def key(self) -> ConsumerKey:
        return (self.namespace, self.consumer)

    def worker(self, drifted: bool = False) -> Worker:
        """The planner's view: a drifted worker is planned as one to rewrite."""
        replicas = 1 if self.replicas is None else self.replicas
        return Worker(self.name, self.address, self.fingerprint, replicas, drifted=drifted)


def view(body: Mapping[str, Any]) -> WorkerView:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    refs = meta.get("ownerReferences") or []
    controller = next((r.get("uid") for r in refs if isinstance(r, Mapping) and r.get("controller")), None)
    replicas = (body.get("spec") or {}).get("replicas")
    return WorkerView(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        consumer=(meta.get("labels") or {}).get(LABEL_CONSUMER, ""),
        controller_uid=controller,
        address=annotations.get(ANNOTATION_NSQD_ADDRESS),
        fingerprint=annotations.get(ANNOTATION_SPEC_HASH),
        replicas=None if replicas is None else int(replicas),
        ready_replicas=manifests.ready_replicas(body),
        generation=int(meta.get("generation") or 0),
        template_hash=annotations.get(ANNOTATION_TEMPLATE_HASH),
        progress=rollout.progress(body),
    )


def drifted(body: Mapping[str, Any], owner: manifests.Owner, spec: ConsumerSpec) -> bool:
    """Whether a Deployment of the current configuration lost fields the operator owns.

    One of an older configuration (another fingerprint) is not drift: the planner rewrites it anyway.
    The replica count is not judged here: the planner compares it with what the consumer wants.
    """
    worker = view(body)
    if worker.address is None or worker.fingerprint != manifests.fingerprint(owner, spec, worker.address):
        return False
    desired = manifests.deployment(owner, spec, worker.address)
    desired["spec"].pop("replicas", None)
    return not drift.covers(body, desired)
