"""The NsqConsumer spec as a typed, frozen value with its defaults.

The CRD's schema validates and defaults too, but the operator cannot rely on it alone: an old CRD,
a `kubectl edit` racing an upgrade, or the local backend (which has no API server) all hand us raw
dicts. So `parse` re-checks everything and answers with a `SpecError` naming the field, never an
exception, so a bad spec becomes a status condition instead of a crash loop.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nsq_operator.autoscale import AutoscalingSpec

# Equal to the worker's own defaults (nsq_worker.settings) where it has one, and to the CRD's
# defaults in deploy/crds/nsqconsumers.nsqoperator.dev.yaml (a unit test checks those).
# The worker image when spec.worker.image is empty: the chart sets it (worker.defaultImage) so one
# operator release and its worker image travel together. Read once, at start-up.
DEFAULT_IMAGE = os.environ.get("NSQ_OPERATOR_DEFAULT_WORKER_IMAGE") or "nsq-operator/worker:0.1.0"
DEFAULT_POLL_INTERVAL_SECONDS = 10
DEFAULT_REMOVAL_GRACE_SECONDS = 300
DEFAULT_MAX_IN_FLIGHT = 200
DEFAULT_CONCURRENCY = 200
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_REQUEUE_DELAY_SECONDS = 1
DEFAULT_DRAIN_TIMEOUT_SECONDS = 25
DEFAULT_HEALTH_PORT = 8080
DEFAULT_REPLICAS_PER_NSQD = 1
# Who sets each worker Deployment's replicas: the operator (replicasPerNsqd, paused), or something
# else that the user put on the Deployments (an HPA, a KEDA ScaledObject), which the operator then
# never overrides. Two writers of one count would fight on every poll.
REPLICAS_OWNER_OPERATOR = "Operator"
REPLICAS_OWNER_EXTERNAL = "External"
REPLICAS_OWNERS = (REPLICAS_OWNER_OPERATOR, REPLICAS_OWNER_EXTERNAL)
DEFAULT_AUTH_KEY = "secret"
DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "1", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "256Mi"},
}

MAX_REPLICAS = 1000  # per nsqd, for the autoscaler: far past what one nsqd can feed
MAX_STABILIZATION_SECONDS = 3600  # the HPA's own limit for a stabilization window
MAX_RDY_COUNT = 2500  # nsqd's --max-rdy-count default: more in flight is refused per connection.
MAX_MSG_TIMEOUT_SECONDS = 900  # nsqd's --max-msg-timeout default (15 min).

# NSQ's own rule for topic and channel names (nsqio/nsq internal/protocol/names.go).
MAX_CONCURRENCY = 100_000  # the worker's own limit (nsq_worker.settings)
NAME_PATTERN = re.compile(r"^[.a-zA-Z0-9_-]+(#ephemeral)?$")
NAME_MAX_LENGTH = 64
LOOKUPD_URL_PATTERN = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# The environment the operator gives every worker (the worker's contract); users may not set these
# through `worker.env`, since the worker would then consume from somewhere the operator does not know.
RESERVED_ENV = frozenset(
    {
        "NSQ_TOPIC",
        "NSQ_CHANNEL",
        "NSQD_TCP_ADDRESS",
        "NSQ_MAX_IN_FLIGHT",
        "NSQ_CONCURRENCY",
        "NSQ_MAX_ATTEMPTS",
        "NSQ_REQUEUE_DELAY",
        "NSQ_MSG_TIMEOUT",
        "NSQ_DRAIN_TIMEOUT",
        "NSQ_DEAD_LETTER_TOPIC",
        "NSQ_HEALTH_PORT",
        "NSQ_TLS",
        "NSQ_TLS_CA_FILE",
        "NSQ_TLS_CERT_FILE",
        "NSQ_TLS_KEY_FILE",
        "NSQ_TLS_VERIFY",
        "NSQ_AUTH_SECRET",
    }
)

JsonObject = Mapping[str, Any]


@dataclass(frozen=True)
class SpecError:
    """Why a spec was refused: the offending field's path and a sentence a user can act on."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class LookupdSpec:
    http_addresses: tuple[str, ...]
    poll_interval_seconds: int = DEFAULT_POLL_INTERVAL_SECONDS


@dataclass(frozen=True)
class TlsSpec:
    """A Secret holding ca.crt, tls.crt and tls.key, mounted read-only into the worker."""

    secret_name: str
    verify: bool = True


@dataclass(frozen=True)
class AuthSpec:
    """The nsqd AUTH secret lives only in a Secret; the CR only points at it."""

    secret_name: str
    key: str = DEFAULT_AUTH_KEY


@dataclass(frozen=True)
class WorkerSpec:
    image: str = DEFAULT_IMAGE
    image_pull_policy: str | None = None
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    env: tuple[JsonObject, ...] = ()
    env_from: tuple[JsonObject, ...] = ()
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    concurrency: int = DEFAULT_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    requeue_delay_seconds: int = DEFAULT_REQUEUE_DELAY_SECONDS
    msg_timeout_seconds: int | None = None
    drain_timeout_seconds: int = DEFAULT_DRAIN_TIMEOUT_SECONDS
    dead_letter_topic: str | None = None
    health_port: int = DEFAULT_HEALTH_PORT
    resources: JsonObject = field(default_factory=lambda: DEFAULT_RESOURCES)
    replicas_per_nsqd: int = DEFAULT_REPLICAS_PER_NSQD
    replicas_owner: str = REPLICAS_OWNER_OPERATOR
    service_account_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[JsonObject, ...] = ()
    affinity: JsonObject | None = None
    image_pull_secrets: tuple[str, ...] = ()
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    tls: TlsSpec | None = None
    auth: AuthSpec | None = None


@dataclass(frozen=True)
class ConsumerSpec:
    topic: str
    channel: str
    lookupd: LookupdSpec
    nsqd_removal_grace_seconds: int = DEFAULT_REMOVAL_GRACE_SECONDS
    paused: bool = False
    worker: WorkerSpec = field(default_factory=WorkerSpec)
    autoscaling: AutoscalingSpec | None = None  # None: off, every nsqd gets replicasPerNsqd

    @property
    def replicas(self) -> int | None:
        """Replicas every worker Deployment should have right now; None when an autoscaler owns them
        (an external one, or the operator's own per-nsqd autoscaler, which decides nsqd by nsqd).

        `paused` wins even then: an HPA (and KEDA) leaves a Deployment scaled to 0 alone, and on
        resume the operator lets go of the count, so the autoscaler takes it up again.
        """
        if self.paused:
            return 0
        if self.worker.replicas_owner == REPLICAS_OWNER_EXTERNAL or self.autoscaling is not None:
            return None
        return self.worker.replicas_per_nsqd

    @property
    def autoscaled(self) -> AutoscalingSpec | None:
        """The autoscaler's settings when it decides replicas now (on, and not paused)."""
        return None if self.paused else self.autoscaling


class _InvalidError(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.error = SpecError(path, message)


_MISSING = object()


def parse(raw: Mapping[str, Any] | None) -> ConsumerSpec | SpecError:
    """Turn a raw `spec` mapping into a ConsumerSpec, or say which field is wrong and why."""
    try:
        return _consumer(_object(raw, "spec"), "spec")
    except _InvalidError as invalid:
        return invalid.error


def _consumer(raw: Mapping[str, Any], path: str) -> ConsumerSpec:
    lookupd = _object(_required(raw, "lookupd", path), f"{path}.lookupd")
    worker_raw = raw.get("worker")
    worker = (
        WorkerSpec()
        if worker_raw is None
        else _worker(_object(worker_raw, f"{path}.worker"), f"{path}.worker")
    )
    topic = _nsq_name(_required(raw, "topic", path), f"{path}.topic")
    channel = _nsq_name(_required(raw, "channel", path), f"{path}.channel")
    autoscaling = (
        None
        if raw.get("autoscaling") is None
        else _autoscaling(_object(raw["autoscaling"], f"{path}.autoscaling"), f"{path}.autoscaling")
    )
    if autoscaling is not None:
        if worker.replicas_owner == REPLICAS_OWNER_EXTERNAL:
            raise _InvalidError(
                f"{path}.autoscaling.enabled",
                "cannot be true while worker.replicasOwner is External: replicas have one owner",
            )
        if autoscaling.min_replicas == 0 and (topic.endswith("#ephemeral") or channel.endswith("#ephemeral")):
            raise _InvalidError(
                f"{path}.autoscaling.minReplicas",
                "must be at least 1 for an #ephemeral topic or channel: nsqd drops its messages while "
                "no worker is subscribed",
            )
    return ConsumerSpec(
        topic=topic,
        channel=channel,
        autoscaling=autoscaling,
        lookupd=LookupdSpec(
            http_addresses=_lookupd_urls(
                _required(lookupd, "httpAddresses", f"{path}.lookupd"), f"{path}.lookupd.httpAddresses"
            ),
            poll_interval_seconds=_int(
                lookupd, "pollIntervalSeconds", f"{path}.lookupd", DEFAULT_POLL_INTERVAL_SECONDS, minimum=1
            ),
        ),
        nsqd_removal_grace_seconds=_int(
            raw, "nsqdRemovalGraceSeconds", path, DEFAULT_REMOVAL_GRACE_SECONDS, minimum=0
        ),
        paused=_bool(raw, "paused", path, False),
        worker=worker,
    )


def _worker(raw: Mapping[str, Any], path: str) -> WorkerSpec:
    pull_policy = _optional_str(raw, "imagePullPolicy", path)
    if pull_policy is not None and pull_policy not in PULL_POLICIES:
        raise _InvalidError(f"{path}.imagePullPolicy", f"must be one of {', '.join(PULL_POLICIES)}")
    msg_timeout = raw.get("msgTimeoutSeconds")
    dead_letter = raw.get("deadLetterTopic")
    return WorkerSpec(
        image=_str(raw, "image", path, DEFAULT_IMAGE),
        image_pull_policy=pull_policy,
        command=_optional_strings(raw, "command", path),
        args=_optional_strings(raw, "args", path),
        env=_env(raw.get("env"), f"{path}.env"),
        env_from=_objects(raw.get("envFrom"), f"{path}.envFrom"),
        max_in_flight=_int(raw, "maxInFlight", path, DEFAULT_MAX_IN_FLIGHT, minimum=1, maximum=MAX_RDY_COUNT),
        concurrency=_int(raw, "concurrency", path, DEFAULT_CONCURRENCY, minimum=1, maximum=MAX_CONCURRENCY),
        max_attempts=_int(raw, "maxAttempts", path, DEFAULT_MAX_ATTEMPTS, minimum=0, maximum=65535),
        requeue_delay_seconds=_int(
            raw,
            "requeueDelaySeconds",
            path,
            DEFAULT_REQUEUE_DELAY_SECONDS,
            minimum=0,
            maximum=MAX_MSG_TIMEOUT_SECONDS,
        ),
        msg_timeout_seconds=None
        if msg_timeout is None
        else _int(raw, "msgTimeoutSeconds", path, 0, minimum=1, maximum=MAX_MSG_TIMEOUT_SECONDS),
        drain_timeout_seconds=_int(
            raw, "drainTimeoutSeconds", path, DEFAULT_DRAIN_TIMEOUT_SECONDS, minimum=1
        ),
        dead_letter_topic=None if dead_letter is None else _nsq_name(dead_letter, f"{path}.deadLetterTopic"),
        health_port=_int(raw, "healthPort", path, DEFAULT_HEALTH_PORT, minimum=1, maximum=65535),
        resources=_object(raw["resources"], f"{path}.resources")
        if raw.get("resources")
        else DEFAULT_RESOURCES,
        replicas_per_nsqd=_int(raw, "replicasPerNsqd", path, DEFAULT_REPLICAS_PER_NSQD, minimum=1),
        replicas_owner=_choice(raw, "replicasOwner", path, REPLICAS_OWNERS),
        service_account_name=_optional_str(raw, "serviceAccountName", path),
        node_selector=_str_map(raw.get("nodeSelector"), f"{path}.nodeSelector"),
        tolerations=_objects(raw.get("tolerations"), f"{path}.tolerations"),
        affinity=None if raw.get("affinity") is None else _object(raw["affinity"], f"{path}.affinity"),
        image_pull_secrets=_pull_secrets(raw.get("imagePullSecrets"), f"{path}.imagePullSecrets"),
        pod_labels=_str_map(raw.get("podLabels"), f"{path}.podLabels"),
        pod_annotations=_str_map(raw.get("podAnnotations"), f"{path}.podAnnotations"),
        tls=_tls(raw.get("tls"), f"{path}.tls"),
        auth=_auth(raw.get("auth"), f"{path}.auth"),
    )


def _autoscaling(raw: Mapping[str, Any], path: str) -> AutoscalingSpec | None:
    """None unless `enabled`; bad numbers are refused even while it is off, so turning it on works."""
    defaults = AutoscalingSpec()
    minimum = _int(raw, "minReplicas", path, defaults.min_replicas, minimum=0, maximum=MAX_REPLICAS)
    maximum = _int(raw, "maxReplicas", path, defaults.max_replicas, minimum=1, maximum=MAX_REPLICAS)
    if minimum > maximum:
        raise _InvalidError(f"{path}.minReplicas", f"must not exceed maxReplicas ({maximum}), not {minimum}")
    found = AutoscalingSpec(
        min_replicas=minimum,
        max_replicas=maximum,
        target_backlog_per_replica=_int(
            raw, "targetBacklogPerReplica", path, defaults.target_backlog_per_replica, minimum=1
        ),
        scale_down_stabilization_seconds=_int(
            raw,
            "scaleDownStabilizationSeconds",
            path,
            defaults.scale_down_stabilization_seconds,
            minimum=0,
            maximum=MAX_STABILIZATION_SECONDS,
        ),
        max_scale_up_step=_int(
            raw, "maxScaleUpStep", path, defaults.max_scale_up_step, minimum=1, maximum=MAX_REPLICAS
        ),
    )
    return found if _bool(raw, "enabled", path, False) else None


def _tls(raw: object, path: str) -> TlsSpec | None:
    if raw is None:
        return None
    tls = _object(raw, path)
    return TlsSpec(
        secret_name=_resource_name(_required(tls, "secretName", path), f"{path}.secretName"),
        verify=_bool(tls, "verify", path, True),
    )


def _auth(raw: object, path: str) -> AuthSpec | None:
    if raw is None:
        return None
    auth = _object(raw, path)
    return AuthSpec(
        secret_name=_resource_name(_required(auth, "secretName", path), f"{path}.secretName"),
        key=_str(auth, "key", path, DEFAULT_AUTH_KEY),
    )


# --- small checkers: each raises _InvalidError with the full path of the field it looked at -----------------


def _required(raw: Mapping[str, Any], key: str, path: str) -> Any:
    value = raw.get(key, _MISSING)
    if value is _MISSING or value is None:
        raise _InvalidError(f"{path}.{key}", "is required")
    return value


def _object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _InvalidError(path, f"must be an object, not {type(value).__name__}")
    return value


def _objects(value: object, path: str) -> tuple[JsonObject, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _InvalidError(path, "must be a list")
    return tuple(dict(_object(item, f"{path}[{i}]")) for i, item in enumerate(value))


def _env(value: object, path: str) -> tuple[JsonObject, ...]:
    items = _objects(value, path)
    for i, item in enumerate(items):
        if not isinstance(item.get("name"), str) or not item["name"]:
            raise _InvalidError(f"{path}[{i}].name", "is required")
        if item["name"] in RESERVED_ENV:
            raise _InvalidError(
                f"{path}[{i}].name",
                f"{item['name']} is set by the operator from the spec; use the matching worker field instead",
            )
    return items


def _int(
    raw: Mapping[str, Any],
    key: str,
    path: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = raw.get(key)
    if value is None:
        return default
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if isinstance(value, bool) or not finite or int(value) != value:
        raise _InvalidError(f"{path}.{key}", f"must be an integer, not {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise _InvalidError(f"{path}.{key}", f"must be at least {minimum}, not {number}")
    if maximum is not None and number > maximum:
        raise _InvalidError(f"{path}.{key}", f"must be at most {maximum}, not {number}")
    return number


def _bool(raw: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _InvalidError(f"{path}.{key}", f"must be true or false, not {value!r}")
    return value


def _choice(raw: Mapping[str, Any], key: str, path: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default)."""
    value = _str(raw, key, path, choices[0])
    if value not in choices:
        raise _InvalidError(f"{path}.{key}", f"must be one of {', '.join(choices)}")
    return value


def _str(raw: Mapping[str, Any], key: str, path: str, default: str) -> str:
    value = _optional_str(raw, key, path)
    return default if value is None else value


def _optional_str(raw: Mapping[str, Any], key: str, path: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _InvalidError(f"{path}.{key}", "must be a non-empty string")
    return value


def _optional_strings(raw: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not all(isinstance(v, str) for v in value)
    ):
        raise _InvalidError(f"{path}.{key}", "must be a list of strings")
    return tuple(value)


def _str_map(value: object, path: str) -> Mapping[str, str]:
    if value is None:
        return {}
    mapping = _object(value, path)
    for key, item in mapping.items():
        if not isinstance(item, str):
            raise _InvalidError(f"{path}.{key}", "must be a string")
    return dict(mapping)


def _pull_secrets(value: object, path: str) -> tuple[str, ...]:
    names = []
    for i, item in enumerate(_objects(value, path)):
        names.append(_resource_name(item.get("name"), f"{path}[{i}].name"))
    return tuple(names)


def _resource_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
        raise _InvalidError(path, f"must be a Kubernetes object name, not {value!r}")
    return value


def _nsq_name(value: object, path: str) -> str:
    if not (isinstance(value, str) and 1 <= len(value) <= NAME_MAX_LENGTH and NAME_PATTERN.fullmatch(value)):
        raise _InvalidError(
            path,
            f"must be 1..{NAME_MAX_LENGTH} characters of [.a-zA-Z0-9_-], optionally "
            f"ending in #ephemeral, not {value!r}",
        )
    return value


def _lookupd_urls(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise _InvalidError(path, "must be a non-empty list of http:// or https:// URLs")
    urls = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not LOOKUPD_URL_PATTERN.fullmatch(item):
            raise _InvalidError(f"{path}[{i}]", f"must be an http:// or https:// URL, not {item!r}")
        urls.append(item.rstrip("/"))
    return tuple(dict.fromkeys(urls))
