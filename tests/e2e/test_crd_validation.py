"""Bad NsqConsumers are refused by the real API server, with a message that names the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

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
