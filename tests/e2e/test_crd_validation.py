"""Bad NsqConsumers are refused by the real API server, with a message that names the field."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from nsq_operator import status
from nsq_operator.autoscale import AutoscalingSpec
from nsq_operator.plan import NsqdRecord, Plan
from nsq_operator.spec import ConsumerSpec, parse
from tests.integration.operators import install_crd
from tests.rig.kube import KubeCluster

GOOD: dict[str, Any] = {
    "apiVersion": "nsqoperator.dev/v1alpha1",
    "kind": "NsqConsumer",
    "metadata": {"name": "good"},
    "spec": {"topic": "events", "channel": "archive", "lookupd": {"httpAddresses": ["http://lookupd:4161"]}},
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one dotted path set to `value` (or removed, for the DELETE marker)."""
    body = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return body


DELETE = object()

# (what is wrong, the body, what the API server's message must name)
BAD = [
    ("missing topic", changed("spec.topic", DELETE), "spec.topic"),
    ("missing channel", changed("spec.channel", DELETE), "spec.channel"),
    ("missing lookupd", changed("spec.lookupd", DELETE), "spec.lookupd"),
    ("topic with a space", changed("spec.topic", "not a topic"), "spec.topic"),
    ("topic too long", changed("spec.topic", "t" * 65), "spec.topic"),
    ("empty topic", changed("spec.topic", ""), "spec.topic"),
    ("channel with a slash", changed("spec.channel", "a/b"), "spec.channel"),
    ("no lookupd address", changed("spec.lookupd.httpAddresses", []), "spec.lookupd.httpAddresses"),
    ("lookupd without scheme", changed("spec.lookupd.httpAddresses", ["lookupd:4161"]), "httpAddresses[0]"),
    ("lookupd over tcp", changed("spec.lookupd.httpAddresses", ["tcp://lookupd:4160"]), "httpAddresses[0]"),
    (
        "zero poll interval",
        changed("spec.lookupd.pollIntervalSeconds", 0),
        "spec.lookupd.pollIntervalSeconds",
    ),
    ("negative grace", changed("spec.nsqdRemovalGraceSeconds", -1), "spec.nsqdRemovalGraceSeconds"),
    (
        "max in flight over nsqd's max RDY",
        changed("spec.worker", {"maxInFlight": 2501}),
        "spec.worker.maxInFlight",
    ),
    ("max in flight zero", changed("spec.worker", {"maxInFlight": 0}), "spec.worker.maxInFlight"),
    ("zero concurrency", changed("spec.worker", {"concurrency": 0}), "spec.worker.concurrency"),
    (
        "msg timeout beyond nsqd's 15 min",
        changed("spec.worker", {"msgTimeoutSeconds": 901}),
        "msgTimeoutSeconds",
    ),
    ("health port out of range", changed("spec.worker", {"healthPort": 70000}), "spec.worker.healthPort"),
    ("paused as a string", changed("spec.paused", "yes"), "spec.paused"),
    ("image empty", changed("spec.worker", {"image": ""}), "spec.worker.image"),
    ("tls without a secret", changed("spec.worker", {"tls": {}}), "secretName"),
    ("auth without a secret", changed("spec.worker", {"auth": {"key": "secret"}}), "secretName"),
    ("unknown field", changed("spec.topics", ["a"]), "spec.topics"),
    ("name too long for a label", changed("metadata.name", "n" * 64), "63"),
    ("pod label key with a space", changed("spec.worker", {"podLabels": {"my team": "a"}}), "podLabels keys"),
    ("pod label key too long", changed("spec.worker", {"podLabels": {"k" * 64: "a"}}), "podLabels keys"),
    ("pod label value with a slash", changed("spec.worker", {"podLabels": {"team": "a/b"}}), "podLabels"),
    ("pod label value too long", changed("spec.worker", {"podLabels": {"team": "v" * 64}}), "podLabels"),
    (
        "annotation key with a colon",
        changed("spec.worker", {"podAnnotations": {"a:b": "x"}}),
        "podAnnotations keys",
    ),
    ("node selector key bad", changed("spec.worker", {"nodeSelector": {"-zone": "a"}}), "nodeSelector keys"),
    (
        "cpu that is not a quantity",
        changed("spec.worker", {"resources": {"limits": {"cpu": "one"}}}),
        "spec.worker.resources.limits.cpu",
    ),
    (
        "memory that is not a quantity",
        changed("spec.worker", {"resources": {"requests": {"memory": "256MB"}}}),
        "spec.worker.resources.requests.memory",
    ),
    ("replicas owner unknown", changed("spec.worker", {"replicasOwner": "HPA"}), "spec.worker.replicasOwner"),
]


def autoscaling(**fields: Any) -> dict[str, Any]:
    return changed("spec.autoscaling", fields)


def autoscaled(path: str, value: Any, **fields: Any) -> dict[str, Any]:
    """GOOD with an autoscaling block and one more path set."""
    body = autoscaling(**fields)
    body["spec"].update({k: v for k, v in changed(path, value)["spec"].items() if k != "autoscaling"})
    return body


# (what is wrong, the body, what the API server's message must say: the field, then why)
BAD_AUTOSCALING = [
    (
        "min over max",
        autoscaling(enabled=True, minReplicas=5, maxReplicas=4),
        ["spec.autoscaling.minReplicas", "minReplicas must not exceed maxReplicas"],
    ),
    (
        "min over the default max",
        autoscaling(enabled=True, minReplicas=5),
        ["spec.autoscaling.minReplicas", "minReplicas must not exceed maxReplicas"],
    ),
    (
        "min over max while disabled",  # as the operator's parser: turning it on later must work
        autoscaling(enabled=False, minReplicas=5, maxReplicas=4),
        ["spec.autoscaling.minReplicas", "minReplicas must not exceed maxReplicas"],
    ),
    ("min -1", autoscaling(minReplicas=-1), ["spec.autoscaling.minReplicas", "greater than or equal to 0"]),
    ("max 0", autoscaling(maxReplicas=0), ["spec.autoscaling.maxReplicas", "greater than or equal to 1"]),
    (
        "max 1001",
        autoscaling(maxReplicas=1001),
        ["spec.autoscaling.maxReplicas", "less than or equal to 1000"],
    ),
    (
        "target backlog 0",
        autoscaling(targetBacklogPerReplica=0),
        ["spec.autoscaling.targetBacklogPerReplica", "greater than or equal to 1"],
    ),
    (
        "window 4000 s",
        autoscaling(scaleDownStabilizationSeconds=4000),
        ["spec.autoscaling.scaleDownStabilizationSeconds", "less than or equal to 3600"],
    ),
    (
        "step 0",
        autoscaling(maxScaleUpStep=0),
        ["spec.autoscaling.maxScaleUpStep", "greater than or equal to 1"],
    ),
    ("enabled as a string", autoscaling(enabled="yes"), ["spec.autoscaling.enabled", "boolean"]),
    ("a typo in a field", autoscaling(enabled=True, maxReplica=3), ["spec.autoscaling.maxReplica"]),
    (
        "enabled with an external owner",
        autoscaled("spec.worker", {"replicasOwner": "External"}, enabled=True),
        ["spec.autoscaling.enabled", "cannot be true while worker.replicasOwner is External"],
    ),
    (
        "min 0 with an #ephemeral channel",
        autoscaled("spec.channel", "archive#ephemeral", enabled=True, minReplicas=0),
        ["spec.autoscaling.minReplicas", "must be at least 1 for an #ephemeral topic or channel"],
    ),
    (
        "min 0 with an #ephemeral topic",
        autoscaled("spec.topic", "events#ephemeral", enabled=True, minReplicas=0),
        ["spec.autoscaling.minReplicas", "#ephemeral"],
    ),
]

GOOD_AUTOSCALING = [
    autoscaling(enabled=True),
    autoscaling(
        enabled=True,
        minReplicas=0,
        maxReplicas=1000,
        targetBacklogPerReplica=1,
        scaleDownStabilizationSeconds=3600,
        maxScaleUpStep=1000,
    ),
    autoscaling(enabled=True, minReplicas=3, maxReplicas=3, scaleDownStabilizationSeconds=0),
    autoscaling(),
    autoscaled("spec.worker", {"replicasOwner": "External"}, enabled=False),
    autoscaled("spec.channel", "archive#ephemeral", enabled=False, minReplicas=0),
    autoscaled("spec.channel", "archive#ephemeral", enabled=True, minReplicas=1),
]

# What the schema must let through: the shapes people really write.
GOOD_TOO = [
    changed("spec.worker", {"podLabels": {"app.kubernetes.io/part-of": "billing", "team": ""}}),
    changed("spec.worker", {"podAnnotations": {"prometheus.io/scrape": "true", "note": "any text: at all"}}),
    changed("spec.worker", {"nodeSelector": {"kubernetes.io/arch": "amd64"}}),
    changed(
        "spec.worker", {"resources": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": 1}}}
    ),
    changed("spec.worker", {"resources": {"limits": {"cpu": "0.5", "memory": "1e9"}}}),
]


@pytest.fixture(scope="module")
def crd(kube_cluster: KubeCluster) -> Path:
    return install_crd(kube_cluster)


def test_the_good_consumer_is_accepted(crd: Path, kube_cluster: KubeCluster, kube_namespace: str) -> None:
    result = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-n", kube_namespace, "-f", "-", input=json.dumps(GOOD)
    )
    assert "(server dry run)" in result.stdout


@pytest.mark.parametrize(("case", "body", "names"), BAD, ids=[case for case, _, _ in BAD])
def test_a_bad_consumer_is_refused_naming_the_field(
    crd: Path, kube_cluster: KubeCluster, kube_namespace: str, case: str, body: dict[str, Any], names: str
) -> None:
    result = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-n", kube_namespace, "-f", "-", input=json.dumps(body), check=False
    )
    assert result.returncode != 0, f"{case}: accepted"
    assert names in result.stderr, f"{case}: {result.stderr}"


@pytest.mark.parametrize("body", GOOD_TOO, ids=range(len(GOOD_TOO)))
def test_valid_labels_annotations_and_quantities_are_accepted(
    crd: Path, kube_cluster: KubeCluster, kube_namespace: str, body: dict[str, Any]
) -> None:
    result = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-n", kube_namespace, "-f", "-", input=json.dumps(body), check=False
    )
    assert result.returncode == 0, result.stderr


def dry_run(kube: KubeCluster, namespace: str, body: dict[str, Any]) -> Any:
    return kube.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(body), check=False
    )


@pytest.mark.parametrize(("case", "body", "says"), BAD_AUTOSCALING, ids=[c for c, _, _ in BAD_AUTOSCALING])
def test_bad_autoscaling_is_refused_saying_which_field_and_why(
    crd: Path,
    kube_cluster: KubeCluster,
    kube_namespace: str,
    case: str,
    body: dict[str, Any],
    says: list[str],
) -> None:
    result = dry_run(kube_cluster, kube_namespace, body)
    assert result.returncode != 0, f"{case}: accepted"
    for words in says:
        assert words in result.stderr, f"{case}: {words!r} not in {result.stderr}"
    if case != "a typo in a field":  # the operator ignores unknown fields; the API server refuses them
        assert not isinstance(parse(body["spec"]), ConsumerSpec), f"{case}: the operator's parser accepts it"


@pytest.mark.parametrize("body", GOOD_AUTOSCALING, ids=range(len(GOOD_AUTOSCALING)))
def test_valid_autoscaling_is_accepted(
    crd: Path, kube_cluster: KubeCluster, kube_namespace: str, body: dict[str, Any]
) -> None:
    result = dry_run(kube_cluster, kube_namespace, body)
    assert result.returncode == 0, result.stderr
    assert isinstance(parse(body["spec"]), ConsumerSpec), "the API server and the operator agree"


def test_autoscaling_defaults_are_filled_in_and_mean_the_operators_defaults(
    crd: Path, kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    body = changed("metadata.name", "scaled")
    body["spec"]["autoscaling"] = {"enabled": True, "maxReplicas": 8}
    kube_cluster.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(body))
    stored = json.loads(
        kube_cluster.kubectl("get", "nsqc", "scaled", "-n", kube_namespace, "-o", "json").stdout
    )
    assert stored["spec"]["autoscaling"] == {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 8,
        "targetBacklogPerReplica": 1000,
        "scaleDownStabilizationSeconds": 300,
        "maxScaleUpStep": 4,
    }
    parsed = parse(stored["spec"])
    assert isinstance(parsed, ConsumerSpec)
    assert parsed.autoscaling == AutoscalingSpec(max_replicas=8)
    assert parsed == parse(body["spec"]), "the stored (defaulted) spec means what the user wrote"


def test_the_api_server_keeps_the_autoscalers_status_and_shows_its_replicas(
    crd: Path, kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    """Every status field the operator writes survives the schema's pruning; Replicas shows their sum."""
    body = changed("metadata.name", "figures")
    body["spec"]["autoscaling"] = {"enabled": True}
    kube_cluster.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(body))
    now = datetime.now(UTC).replace(microsecond=0)
    a, b = "10.0.0.1:4150", "10.0.0.2:4150"
    scaling = {
        a: status.NsqdScaling(
            depth=4200, in_flight=200, current=2, desired=5, reason="backlog 4400: up from 2"
        ),
        b: status.NsqdScaling(None, None, None, 1, "held at 1: refused", unreadable="connection refused"),
    }
    observation = status.Observation(
        "figures",
        1,
        now,
        plan=Plan((), (NsqdRecord(a, last_seen=now), NsqdRecord(b, last_seen=now, missing_since=now))),
        scaling=scaling,
        desired_total=6,
        ready={},
    )
    written = status.build(observation, None)
    kube_cluster.kubectl(
        "patch", "nsqc", "figures", "-n", kube_namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": written}),
    )  # fmt: skip
    stored = json.loads(
        kube_cluster.kubectl("get", "nsqc", "figures", "-n", kube_namespace, "-o", "json").stdout
    )
    assert stored["status"] == written
    assert stored["status"]["nsqds"][0]["scaleReason"] == "backlog 4400: up from 2"
    table = kube_cluster.kubectl("get", "nsqc", "figures", "-n", kube_namespace).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert dict(zip(header, row, strict=False))["REPLICAS"] == "6"


def explain(kube: KubeCluster, *args: str, showing: Iterable[str] = ()) -> str:
    """`kubectl explain ARGS`, whitespace folded, once it works and shows every one of `showing`.

    The API server publishes a new CRD's OpenAPI a little after it is established (and a changed
    one a little after the change), so this asks again for up to a minute.
    """
    wanted = [" ".join(words.split()) for words in showing]
    deadline = time.monotonic() + 60
    while True:
        result = kube.kubectl("explain", *args, check=False)
        text = " ".join(result.stdout.split())
        if result.returncode == 0 and all(words in text for words in wanted):
            return text
        if time.monotonic() > deadline:
            assert result.returncode == 0, result.stderr
            return text  # the caller's assertions say what is missing
        time.sleep(1)


def test_kubectl_explain_describes_autoscaling(crd: Path, kube_cluster: KubeCluster) -> None:
    text = explain(kube_cluster, "nsqconsumer.spec.autoscaling")
    assert "Scale each nsqd's worker Deployment on that nsqd's own backlog" in text
    for field in ("enabled", "minReplicas", "maxReplicas", "targetBacklogPerReplica", "maxScaleUpStep"):
        assert field in text, field
    window = kube_cluster.kubectl("explain", "nsqconsumer.spec.autoscaling.scaleDownStabilizationSeconds")
    assert "so bursts shorter than it do not flap replicas" in " ".join(window.stdout.split())


def described(crd: Path, path: str) -> tuple[list[str], dict[str, str]]:
    """What `kubectl explain` should say of `path`: its description (and its items', for a list),
    and the description of each field under it."""
    loaded = yaml.safe_load(crd.read_text())
    node: dict[str, Any] = loaded["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for name in path.split("."):
        node = node["properties"][name]
        own = [node["description"]]
        while node.get("type") == "array":
            node = node["items"]
            own.append(node["description"])
    fields = {name: child["description"] for name, child in (node.get("properties") or {}).items()}
    return own, fields


# (the path, words its explanation must hold: what the CRD says there, written out once here too)
EXPLAINED = [
    ("spec.worker", "one Deployment per nsqd"),
    ("spec.worker.maxInFlight", "RDY count per worker"),
    ("spec.lookupd", "The nsqlookupd to ask which nsqd produce the topic."),
    ("spec.lookupd.pollIntervalSeconds", "How often to ask lookupd and reconcile."),
    ("spec.worker.tolerations", "Taints the worker pods tolerate"),
    ("spec.worker.env.valueFrom", "Where the value comes from"),
    ("spec.worker.tls", "TLS to nsqd"),
    ("status", "What the operator last saw and did."),
    ("status.nsqds", "One entry per nsqd that has a worker"),
    ("status.nsqds.missingSince", "deleted nsqdRemovalGraceSeconds later unless it comes back"),
    ("status.conditions", "Ready, LookupdReachable, SpecValid"),
    ("status.conditions.lastTransitionTime", "When status last changed"),
]


@pytest.mark.parametrize(("path", "words"), EXPLAINED, ids=[path for path, _ in EXPLAINED])
def test_kubectl_explain_shows_the_crds_descriptions(
    crd: Path, kube_cluster: KubeCluster, path: str, words: str
) -> None:
    """The field's own description, and for an object every field under it with its description."""
    own, fields = described(crd, path)
    text = explain(kube_cluster, f"nsqconsumer.{path}", showing=[words, *own, *fields.values()])
    assert words in text, f"{path}: {words!r} not in {text}"
    for description in own:
        assert " ".join(description.split()) in text, f"{path}: {description!r} not in {text}"
    for name, description in fields.items():
        assert f"{name} <" in text, f"{path}.{name} not listed: {text}"
        assert " ".join(description.split()) in text, f"{path}.{name}: {description!r} not in {text}"
    for blank in ("<empty>", "<no description>"):  # what kubectl prints for a field without one
        assert blank not in text, f"{path}: {text}"


def test_kubectl_explain_recursive_lists_every_field(crd: Path, kube_cluster: KubeCluster) -> None:
    """`--recursive` reaches the nested fields: list items, their objects, and the whole status."""
    nested = {
        "spec.worker": ["valueFrom", "imagePullSecrets", "tolerationSeconds", "secretName", "requests"],
        "status": [
            "observedGeneration",
            "nsqdCount",
            "desiredWorkers",
            "readyWorkers",
            "lastLookupTime",
            "readyReplicas",
            "missingSince",
            "scaleReason",
            "lastTransitionTime",
        ],
    }
    for path, fields in nested.items():
        own, _ = described(crd, path)
        text = explain(kube_cluster, f"nsqconsumer.{path}", "--recursive", showing=own)
        assert " ".join(own[0].split()) in text, f"{path}: {text}"
        for field in fields:
            assert f"{field} <" in text, f"{path}: {field} not in {text}"
