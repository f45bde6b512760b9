"""The worker Deployment: deterministic, owned, labelled, locked down, one Guaranteed CPU."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsq_operator import live, manifests, naming
from nsq_operator.resource import ANNOTATION_NSQD_ADDRESS, ANNOTATION_SPEC_HASH, ANNOTATION_TEMPLATE_HASH
from nsq_operator.spec import RESERVED_ENV, ConsumerSpec, SpecError, parse

OWNER = manifests.Owner(name="orders", namespace="shop", uid="1234-abcd")
ADDRESS = "10.1.2.3:4150"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def consumer(**worker: Any) -> ConsumerSpec:
    raw: dict[str, Any] = {
        "topic": "orders",
        "channel": "billing",
        "lookupd": {"httpAddresses": ["http://lookupd:4161"]},
    }
    raw["worker"] = worker
    parsed = parse(raw)
    assert not isinstance(parsed, SpecError), parsed
    return parsed


def render(
    spec: ConsumerSpec | None = None, address: str = ADDRESS, owner: manifests.Owner = OWNER
) -> dict[str, Any]:
    return manifests.deployment(owner, spec or consumer(), address)


def container(body: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = body["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(body: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(body)["env"]}


# --- names -------------------------------------------------------------------------------------------


def test_name_is_consumer_and_a_short_hash() -> None:
    assert re.fullmatch(r"orders-[0-9a-f]{10}", naming.worker_name("orders", ADDRESS))
    assert render()["metadata"]["name"] == naming.worker_name("orders", ADDRESS)


def test_names_are_deterministic_and_differ_per_nsqd() -> None:
    assert naming.worker_name("orders", ADDRESS) == naming.worker_name("orders", ADDRESS)
    assert naming.worker_name("orders", ADDRESS) != naming.worker_name("orders", "10.1.2.4:4150")
    assert naming.worker_name("orders", ADDRESS) != naming.worker_name("payments", ADDRESS)


@given(
    consumer=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
    address=st.from_regex(r"[a-z0-9.]{1,40}:[0-9]{1,5}", fullmatch=True),
)
def test_names_are_dns_labels_of_at_most_63_characters(consumer: str, address: str) -> None:
    name = naming.worker_name(consumer, address)
    assert len(name) <= 63
    assert DNS_LABEL.match(name), name


def test_long_consumer_names_are_cut_and_still_do_not_collide() -> None:
    first, second = "a" * 60 + "-x", "a" * 60 + "-y"
    assert len(naming.worker_name(first, ADDRESS)) == 63
    assert naming.worker_name(first, ADDRESS) != naming.worker_name(second, ADDRESS)
    assert naming.worker_name("a" * 51 + "-b", ADDRESS).startswith("a" * 51 + "-")  # no "--" left behind
    assert "--" not in naming.worker_name("a" * 51 + "-b", ADDRESS)


def test_consumer_names_longer_than_a_label_value_are_refused() -> None:
    assert naming.consumer_name_problem("a" * 63) is None
    assert "63" in (naming.consumer_name_problem("a" * 64) or "")


# --- metadata ------------------------------------------------------------------------------------------


def test_labels_owner_and_annotations() -> None:
    body = render()
    meta = body["metadata"]
    assert meta["namespace"] == "shop"
    assert meta["labels"] == {
        "app.kubernetes.io/name": "nsq-worker",
        "app.kubernetes.io/instance": "orders",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "nsq-operator",
        "nsqoperator.dev/consumer": "orders",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "nsqoperator.dev/v1alpha1",
            "kind": "NsqConsumer",
            "name": "orders",
            "uid": "1234-abcd",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["annotations"][ANNOTATION_NSQD_ADDRESS] == ADDRESS
    assert re.fullmatch(r"[0-9a-f]{16}", meta["annotations"][ANNOTATION_SPEC_HASH])
    assert manifests.owned_by(body, "1234-abcd")
    assert not manifests.owned_by(body, "another-uid")


def test_selector_matches_the_pod_labels_and_is_unique_per_nsqd() -> None:
    body = render()
    selector = body["spec"]["selector"]["matchLabels"]
    pod_labels = body["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert selector["nsqoperator.dev/consumer"] == "orders"
    other = render(address="10.1.2.4:4150")["spec"]["selector"]["matchLabels"]
    assert other != selector


def test_user_pod_labels_cannot_break_the_selector() -> None:
    body = render(
        consumer(
            podLabels={"team": "a", "nsqoperator.dev/consumer": "hijack"},
            podAnnotations={"prometheus.io/scrape": "true"},
        )
    )
    template = body["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "a"
    assert template["labels"]["nsqoperator.dev/consumer"] == "orders"
    assert template["annotations"]["prometheus.io/scrape"] == "true"


def test_rendering_is_deterministic() -> None:
    assert render() == render()
    assert (
        manifests.fingerprint(OWNER, consumer(), ADDRESS)
        == render()["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    )


def test_fingerprint_ignores_replicas_but_sees_real_changes() -> None:
    base = manifests.fingerprint(OWNER, consumer(), ADDRESS)
    assert manifests.fingerprint(OWNER, consumer(replicasPerNsqd=3), ADDRESS) == base
    assert manifests.fingerprint(OWNER, consumer(maxInFlight=10), ADDRESS) != base
    assert manifests.fingerprint(OWNER, consumer(image="other:1"), ADDRESS) != base
    assert manifests.fingerprint(OWNER, consumer(), "10.1.2.4:4150") != base


def test_template_hash_changes_only_with_the_pod_template() -> None:
    """What rolls pods waits for the rollout budget; a Deployment-level change (the paused mark of an
    autoscaler's Deployment, its replicas) does not roll pods."""
    base = manifests.template_hash(OWNER, consumer(), ADDRESS)
    assert render()["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] == base
    assert render(consumer(replicasPerNsqd=3))["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] == base
    assert manifests.template_hash(OWNER, consumer(image="other/worker:2"), ADDRESS) != base
    assert manifests.template_hash(OWNER, consumer(maxInFlight=7), ADDRESS) != base
    lookupd = {"httpAddresses": ["http://lookupd:4161"]}
    worker = {"replicasOwner": "External"}
    raw = {"topic": "orders", "channel": "billing", "lookupd": lookupd, "worker": worker}
    external, paused = parse(raw), parse({**raw, "paused": True})
    assert isinstance(external, ConsumerSpec)
    assert isinstance(paused, ConsumerSpec)
    fingerprints = {manifests.fingerprint(OWNER, s, ADDRESS) for s in (paused, external)}
    assert len(fingerprints) == 2
    assert len({manifests.template_hash(OWNER, s, ADDRESS) for s in (paused, external)}) == 1


def test_paused_renders_zero_replicas() -> None:
    raw = {"topic": "t", "channel": "c", "lookupd": {"httpAddresses": ["http://l:4161"]}, "paused": True}
    spec = parse(raw)
    assert isinstance(spec, ConsumerSpec)
    assert render(spec)["spec"]["replicas"] == 0
    assert render(consumer(replicasPerNsqd=2))["spec"]["replicas"] == 2


def test_the_live_view_round_trips() -> None:
    body = render()
    worker = live.view(body)
    assert worker.name == body["metadata"]["name"]
    assert worker.address == ADDRESS
    assert worker.fingerprint == manifests.fingerprint(OWNER, consumer(), ADDRESS)
    assert worker.replicas == 1
    assert worker.controller_uid == OWNER.uid
    assert worker.key == (OWNER.namespace, OWNER.name)
    assert worker.template_hash == manifests.template_hash(OWNER, consumer(), ADDRESS)
    assert manifests.ready_replicas({**body, "status": {"readyReplicas": 1}}) == 1
    assert manifests.ready_replicas(body) == 0


# --- the pod -------------------------------------------------------------------------------------------


def test_worker_env_contract() -> None:
    assert env(render()) == {
        "NSQ_TOPIC": "orders",
        "NSQ_CHANNEL": "billing",
        "NSQD_TCP_ADDRESS": ADDRESS,
        "NSQ_MAX_IN_FLIGHT": "200",
        "NSQ_CONCURRENCY": "200",
        "NSQ_MAX_ATTEMPTS": "5",
        "NSQ_REQUEUE_DELAY": "1",
        "NSQ_DRAIN_TIMEOUT": "25",
        "NSQ_HEALTH_PORT": "8080",
        "NSQ_TLS": "false",
    }


def test_optional_settings_tls_and_auth_reach_the_env() -> None:
    body = render(
        consumer(
            msgTimeoutSeconds=120,
            deadLetterTopic="orders.dead",
            tls={"secretName": "nsq-tls", "verify": False},
            auth={"secretName": "nsq-auth", "key": "token"},
            env=[{"name": "APP_MODE", "value": "fast"}],
            envFrom=[{"configMapRef": {"name": "app"}}],
        )
    )
    values = env(body)
    assert values["NSQ_MSG_TIMEOUT"] == "120"
    assert values["NSQ_DEAD_LETTER_TOPIC"] == "orders.dead"
    assert values["NSQ_TLS"] == "true"
    assert values["NSQ_TLS_VERIFY"] == "false"
    assert values["NSQ_TLS_CA_FILE"] == "/etc/nsq/tls/ca.crt"
    assert values["NSQ_TLS_CERT_FILE"] == "/etc/nsq/tls/tls.crt"
    assert values["NSQ_TLS_KEY_FILE"] == "/etc/nsq/tls/tls.key"
    assert values["NSQ_AUTH_SECRET"] == {"secretKeyRef": {"name": "nsq-auth", "key": "token"}}
    assert values["APP_MODE"] == "fast"
    assert [e["name"] for e in container(body)["env"]][-1] == "APP_MODE"  # the user's come last
    assert container(body)["envFrom"] == [{"configMapRef": {"name": "app"}}]
    mounts = {m["name"]: m for m in container(body)["volumeMounts"]}
    assert mounts["nsq-tls"] == {"name": "nsq-tls", "mountPath": "/etc/nsq/tls", "readOnly": True}
    volumes = {v["name"]: v for v in body["spec"]["template"]["spec"]["volumes"]}
    assert volumes["nsq-tls"]["secret"]["secretName"] == "nsq-tls"


def test_every_contract_variable_is_reserved() -> None:
    body = render(
        consumer(msgTimeoutSeconds=1, deadLetterTopic="d", tls={"secretName": "s"}, auth={"secretName": "a"})
    )
    assert set(env(body)) == RESERVED_ENV


def test_default_resources_are_one_guaranteed_cpu() -> None:
    resources = container(render())["resources"]
    assert resources["requests"] == resources["limits"]
    assert resources["limits"]["cpu"] == "1"
    assert resources["limits"]["memory"]


def test_pod_and_container_are_locked_down() -> None:
    body = render()
    pod = body["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(body)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container(body)["volumeMounts"]
    assert {v["name"] for v in pod["volumes"]} == {"tmp"}


def test_grace_period_outlasts_the_drain() -> None:
    pod = render(consumer(drainTimeoutSeconds=90))["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 90


def test_probes_use_the_health_port() -> None:
    c = container(render(consumer(healthPort=9000)))
    assert c["ports"] == [{"name": "health", "containerPort": 9000, "protocol": "TCP"}]
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_a_slow_start_gets_minutes_before_liveness_applies() -> None:
    startup = container(render())["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert startup["periodSeconds"] <= 2  # ...but a quick start is seen within seconds
    assert startup["timeoutSeconds"] >= 1


def test_liveness_restarts_only_a_loop_stuck_for_many_seconds() -> None:
    live = container(render())["livenessProbe"]
    # The worker's own stall limit is 5 s; a stall must outlast several probes before a restart.
    assert live["periodSeconds"] * live["failureThreshold"] >= 20
    assert live["timeoutSeconds"] >= 1
    ready = container(render())["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 10  # an outage shows within seconds


def test_the_termination_message_is_only_what_the_worker_wrote() -> None:
    """File, never FallbackToLogsOnError: a log line may quote message data, and the operator copies
    the termination message into the NsqConsumer's status and events."""
    c = container(render())
    assert c["terminationMessagePolicy"] == "File"
    assert "terminationMessagePath" not in c  # the worker writes the default, /dev/termination-log


def test_rollout_never_runs_more_workers_than_asked() -> None:
    strategy = render()["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def test_pod_settings_pass_through() -> None:
    terms: list[Any] = []
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms}}
    body = render(
        consumer(
            image="registry.example/worker:2",
            imagePullPolicy="Always",
            command=["python"],
            args=["-m", "app"],
            serviceAccountName="worker",
            nodeSelector={"disk": "ssd"},
            tolerations=[{"key": "dedicated", "operator": "Exists"}],
            affinity=affinity,
            imagePullSecrets=[{"name": "regcred"}],
            resources={"requests": {"cpu": "2"}, "limits": {"cpu": "2"}},
        )
    )
    pod = body["spec"]["template"]["spec"]
    c = container(body)
    assert (c["image"], c["imagePullPolicy"], c["command"], c["args"]) == (
        "registry.example/worker:2",
        "Always",
        ["python"],
        ["-m", "app"],
    )
    assert pod["serviceAccountName"] == "worker"
    assert "automountServiceAccountToken" not in pod
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["affinity"] == affinity
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert c["resources"] == {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}


@pytest.mark.parametrize("address", ["[fd00::1]:4150", "nsqd-0.nsqd.default.svc:4150"])
def test_unusual_addresses_render(address: str) -> None:
    body = render(address=address)
    assert env(body)["NSQD_TCP_ADDRESS"] == address
    assert len(body["metadata"]["name"]) <= 63


def test_an_autoscalers_replicas_are_left_out_and_its_pause_is_marked() -> None:
    external = consumer(replicasOwner="External")
    assert "replicas" not in render(external)["spec"]
    raw = {
        "topic": "t",
        "channel": "c",
        "lookupd": {"httpAddresses": ["http://l:4161"]},
        "paused": True,
        "worker": {"replicasOwner": "External"},
    }
    paused = parse(raw)
    assert isinstance(paused, ConsumerSpec)
    assert render(paused)["spec"]["replicas"] == 0
    assert render(paused)["metadata"]["annotations"]["nsqoperator.dev/paused"] == "true"
    assert manifests.fingerprint(OWNER, paused, ADDRESS) != manifests.fingerprint(OWNER, external, ADDRESS)
    assert "nsqoperator.dev/paused" not in render(consumer())["metadata"]["annotations"]
