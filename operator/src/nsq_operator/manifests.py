"""The worker Deployment for one (NsqConsumer, nsqd) pair, as a plain dict. Pure.

The Deployment carries a hash of everything it was rendered from (the `spec-hash` annotation), so
the operator rewrites it only when something really changed, never on every poll.

Rollout strategy: RollingUpdate with maxSurge 0 and maxUnavailable 1. The invariant is "never more
than replicasPerNsqd workers taking messages from one nsqd" (and never more CPUs than that): with no
surge a new pod only starts once an old one is terminating, and a terminating worker has already sent
RDY 0 and is only draining what it holds. Unlike Recreate, that lets the replacement start while the
old pod drains, and with replicasPerNsqd > 1 the other replicas keep consuming during a rollout.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

from nsq_operator import naming
from nsq_operator.resource import (
    ANNOTATION_NSQD_ADDRESS,
    ANNOTATION_PAUSED,
    ANNOTATION_SPEC_HASH,
    ANNOTATION_TEMPLATE_HASH,
    API_VERSION,
    KIND,
    LABEL_COMPONENT,
    LABEL_CONSUMER,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_NSQD,
    MANAGER,
    WORKER_APP,
)
from nsq_operator.spec import REPLICAS_OWNER_EXTERNAL, ConsumerSpec

CONTAINER_NAME = "worker"
RUN_AS = 10001  # the worker image's non-root user
TLS_DIR = "/etc/nsq/tls"
TERMINATION_MARGIN_SECONDS = 15  # beyond the drain deadline: closing, flushing logs, exiting
STARTUP_SECONDS = 300  # how long imports and setup() may keep /healthz from answering at first
STARTUP_PERIOD_SECONDS = 2


@dataclass(frozen=True)
class Owner:
    """The NsqConsumer a worker belongs to."""

    name: str
    namespace: str
    uid: str


def labels(consumer: str) -> dict[str, str]:
    """The labels every worker Deployment of `consumer` carries (and selects on, with LABEL_NSQD)."""
    return {
        LABEL_NAME: WORKER_APP,
        LABEL_INSTANCE: consumer,
        LABEL_COMPONENT: "worker",
        LABEL_MANAGED_BY: MANAGER,
        LABEL_CONSUMER: consumer,
    }


def deployment(
    owner: Owner, spec: ConsumerSpec, address: str, replicas: int | EllipsisType | None = ...
) -> dict[str, Any]:
    """The complete Deployment for the worker of `owner` that consumes from nsqd `address`.

    It is what the operator server-side applies: every field in it is the operator's. `replicas`
    is the count (the operator's autoscaler decides it per nsqd), by default `spec.replicas`; with
    None the body has no count, so an external autoscaler's stays theirs.
    """
    body = _render(owner, spec, address)
    body["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = _hash(body)
    body["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] = _hash(body["spec"]["template"])
    count = spec.replicas if isinstance(replicas, EllipsisType) else replicas
    if count is not None:
        body["spec"]["replicas"] = count
    return body


def fingerprint(owner: Owner, spec: ConsumerSpec, address: str) -> str:
    """The spec-hash annotation `deployment` would carry: everything but the replica count."""
    return _hash(_render(owner, spec, address))


def template_hash(owner: Owner, spec: ConsumerSpec, address: str) -> str:
    """The template-hash annotation `deployment` would carry: a change of it rolls the worker's pods."""
    return _hash(_render(owner, spec, address)["spec"]["template"])


def owned_by(body: Mapping[str, Any], uid: str) -> bool:
    """Whether `uid` is the controller of this object (a same-named consumer from before is not)."""
    refs = body.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def ready_replicas(body: Mapping[str, Any]) -> int:
    return int((body.get("status") or {}).get("readyReplicas") or 0)


def _hash(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _render(owner: Owner, spec: ConsumerSpec, address: str) -> dict[str, Any]:
    worker = spec.worker
    selector = {LABEL_CONSUMER: owner.name, LABEL_NSQD: naming.nsqd_hash(owner.name, address)}
    pod_labels = {**worker.pod_labels, **labels(owner.name), **selector}
    pod_spec: dict[str, Any] = {
        "containers": [_container(spec, address)],
        "volumes": _volumes(spec),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": worker.drain_timeout_seconds + TERMINATION_MARGIN_SECONDS,
        "enableServiceLinks": False,
    }
    if worker.service_account_name:
        pod_spec["serviceAccountName"] = worker.service_account_name
    else:
        pod_spec["automountServiceAccountToken"] = False  # the worker never talks to the API
    if worker.node_selector:
        pod_spec["nodeSelector"] = dict(worker.node_selector)
    if worker.tolerations:
        pod_spec["tolerations"] = [copy.deepcopy(dict(t)) for t in worker.tolerations]
    if worker.affinity:
        pod_spec["affinity"] = copy.deepcopy(dict(worker.affinity))
    if worker.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in worker.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": naming.worker_name(owner.name, address),
            "namespace": owner.namespace,
            "labels": labels(owner.name),
            "annotations": {ANNOTATION_NSQD_ADDRESS: address, **_paused_mark(spec)},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {**worker.pod_annotations, ANNOTATION_NSQD_ADDRESS: address},
                },
                "spec": pod_spec,
            },
        },
    }


def _paused_mark(spec: ConsumerSpec) -> dict[str, str]:
    """An autoscaler's Deployment paused at 0 says so, so that resuming changes its fingerprint."""
    if spec.paused and spec.worker.replicas_owner == REPLICAS_OWNER_EXTERNAL:
        return {ANNOTATION_PAUSED: "true"}
    return {}


def worker_env(spec: ConsumerSpec, address: str) -> list[dict[str, Any]]:
    """The environment the worker reads (its contract), then the user's own variables."""
    worker = spec.worker
    env: list[dict[str, Any]] = [
        {"name": "NSQ_TOPIC", "value": spec.topic},
        {"name": "NSQ_CHANNEL", "value": spec.channel},
        {"name": "NSQD_TCP_ADDRESS", "value": address},
        {"name": "NSQ_MAX_IN_FLIGHT", "value": str(worker.max_in_flight)},
        {"name": "NSQ_CONCURRENCY", "value": str(worker.concurrency)},
        {"name": "NSQ_MAX_ATTEMPTS", "value": str(worker.max_attempts)},
        {"name": "NSQ_REQUEUE_DELAY", "value": str(worker.requeue_delay_seconds)},
        {"name": "NSQ_DRAIN_TIMEOUT", "value": str(worker.drain_timeout_seconds)},
        {"name": "NSQ_HEALTH_PORT", "value": str(worker.health_port)},
        {"name": "NSQ_TLS", "value": "true" if worker.tls else "false"},
    ]
    if worker.msg_timeout_seconds is not None:
        env.append({"name": "NSQ_MSG_TIMEOUT", "value": str(worker.msg_timeout_seconds)})
    if worker.dead_letter_topic is not None:
        env.append({"name": "NSQ_DEAD_LETTER_TOPIC", "value": worker.dead_letter_topic})
    if worker.tls:
        env += [
            {"name": "NSQ_TLS_CA_FILE", "value": f"{TLS_DIR}/ca.crt"},
            {"name": "NSQ_TLS_CERT_FILE", "value": f"{TLS_DIR}/tls.crt"},
            {"name": "NSQ_TLS_KEY_FILE", "value": f"{TLS_DIR}/tls.key"},
            {"name": "NSQ_TLS_VERIFY", "value": "true" if worker.tls.verify else "false"},
        ]
    if worker.auth:
        env.append(
            {
                "name": "NSQ_AUTH_SECRET",
                "valueFrom": {"secretKeyRef": {"name": worker.auth.secret_name, "key": worker.auth.key}},
            }
        )
    return env + [copy.deepcopy(dict(e)) for e in worker.env]


def _probes() -> dict[str, Any]:
    """Startup, then liveness on /healthz (the loop turns); readiness on /readyz (subscribed).

    /healthz answers 200 as soon as the server listens, also during setup() and nsqd outages. The
    startup probe gives imports and a setup() that blocks the loop STARTUP_SECONDS before liveness
    applies; after that a loop that answers nothing for about 30 s gets the container restarted.
    """
    return {
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "health"},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 2,
            "failureThreshold": STARTUP_SECONDS // STARTUP_PERIOD_SECONDS,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "health"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "health"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
    }


def _container(spec: ConsumerSpec, address: str) -> dict[str, Any]:
    worker = spec.worker
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": worker.image,
        "env": worker_env(spec, address),
        "ports": [{"name": "health", "containerPort": worker.health_port, "protocol": "TCP"}],
        "resources": copy.deepcopy(dict(worker.resources)),
        # The worker writes why it stopped (drained, setup() failed, a bad setting) to
        # /dev/termination-log, and only that reaches the pod's status: never its log lines, which
        # may quote message data (FallbackToLogsOnError would copy the log's tail). The operator
        # copies it into the NsqConsumer's Ready condition and events.
        "terminationMessagePolicy": "File",
        **_probes(),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if worker.image_pull_policy:
        container["imagePullPolicy"] = worker.image_pull_policy
    if worker.command is not None:
        container["command"] = list(worker.command)
    if worker.args is not None:
        container["args"] = list(worker.args)
    if worker.env_from:
        container["envFrom"] = [copy.deepcopy(dict(e)) for e in worker.env_from]
    if worker.tls:
        container["volumeMounts"].append({"name": "nsq-tls", "mountPath": TLS_DIR, "readOnly": True})
    return container


def _volumes(spec: ConsumerSpec) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if spec.worker.tls:
        volumes.append(
            {
                "name": "nsq-tls",
                "secret": {
                    "secretName": spec.worker.tls.secret_name,
                    "defaultMode": 0o440,  # owner and group (fsGroup) may read; nobody else
                },
            }
        )
    return volumes
