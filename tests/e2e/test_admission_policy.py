"""The chart's fence against the confused deputy, enforced by the real API server.

The ValidatingAdmissionPolicy is rendered with helm and applied to the rig's kube-apiserver; the
binding is narrowed to this module's namespace (a test-only change) so that NsqConsumers other tests
create elsewhere on the shared control plane are not refused while it is in force. The aggregated
ClusterRoles are checked through the built-in edit and view roles with `kubectl auth can-i`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.integration.operators import install_crd
from tests.reliability.support import Row
from tests.rig.helm import CHART, KUBE_VERSION, helm
from tests.rig.kube import KubeCluster

ALLOWED_PREFIX = "registry.example.com/team-a/"
ALLOWED_ACCOUNT = "nsq-worker"


def render(release: str, *sets: str, show_only: str) -> list[dict[str, Any]]:
    args = [a for s in sets for a in ("--set", s)]
    out = helm(
        "template", release, str(CHART), "--kube-version", KUBE_VERSION, "-n", "nsq-system",
        "--show-only", show_only, *args,
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def consumer(name: str, **worker: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nsqoperator.dev/v1alpha1",
        "kind": "NsqConsumer",
        "metadata": {"name": name},
        "spec": {
            "topic": "orders",
            "channel": "billing",
            "lookupd": {"httpAddresses": ["http://nsqlookupd:4161"]},
            "worker": worker,
        },
    }


def create(kube: KubeCluster, namespace: str, obj: dict[str, Any], *extra: str) -> tuple[bool, str]:
    result = kube.kubectl("create", "-n", namespace, "-f", "-", *extra, input=json.dumps(obj), check=False)
    return result.returncode == 0, result.stderr


@dataclass(frozen=True)
class Fence:
    namespace: str
    policy: dict[str, Any]


@pytest.fixture(scope="module")
def fence(kube_cluster: KubeCluster) -> Iterator[Fence]:
    install_crd(kube_cluster)
    namespace = f"t-ap-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", namespace)
    docs = render(
        f"ap-{uuid.uuid4().hex[:6]}",
        "admissionPolicy.enabled=true",
        f"admissionPolicy.allowedImagePrefixes={{{ALLOWED_PREFIX},docker.io/library/python:}}",
        f"admissionPolicy.allowedServiceAccounts={{{ALLOWED_ACCOUNT}}}",
        show_only="templates/admission-policy.yaml",
    )
    assert [d["kind"] for d in docs] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    policy, binding = docs
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    try:
        kube_cluster.apply(policy)
        kube_cluster.apply(binding)
        wait_until_refused(kube_cluster, namespace)
        yield Fence(namespace, policy)
    finally:
        for kind, doc in (
            ("validatingadmissionpolicybinding", binding),
            ("validatingadmissionpolicy", policy),
        ):
            kube_cluster.kubectl("delete", kind, doc["metadata"]["name"], "--ignore-not-found", check=False)
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def wait_until_refused(kube: KubeCluster, namespace: str, timeout: float = 60.0) -> None:
    """The API server compiles and starts enforcing a new policy a moment after it is stored."""
    bad = consumer("probe", image="evil.example.com/miner:1")
    deadline = time.monotonic() + timeout
    while True:
        created, stderr = create(kube, namespace, bad, "--dry-run=server")
        if not created and "allowedImagePrefixes" in stderr:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the policy was not enforced within {timeout:.0f} s; last answer: {stderr!r}"
            )
        time.sleep(0.5)


def test_the_policy_compiles_against_the_crd_without_warnings(
    kube_cluster: KubeCluster, fence: Fence
) -> None:
    name = fence.policy["metadata"]["name"]
    deadline = time.monotonic() + 30
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = kube_cluster.get_json("validatingadmissionpolicy", name).get("status", {})
        if "typeChecking" in status:
            break
        time.sleep(0.5)
    assert "typeChecking" in status, status
    assert status["typeChecking"].get("expressionWarnings", []) == [], status


def test_a_disallowed_image_is_refused_naming_the_rule_and_the_image(
    kube_cluster: KubeCluster, fence: Fence
) -> None:
    # A look-alike of the allowed prefix: the prefix ends in "/", so team-a-evil is not under it.
    image = "registry.example.com/team-a-evil/worker:1"
    created, stderr = create(kube_cluster, fence.namespace, consumer("bad-image", image=image))
    assert not created
    assert "ValidatingAdmissionPolicy" in stderr
    assert "admissionPolicy.allowedImagePrefixes" in stderr
    assert image in stderr
    assert (
        kube_cluster.kubectl("get", "nsqc", "bad-image", "-n", fence.namespace, check=False).returncode != 0
    )


def test_a_disallowed_service_account_is_refused(kube_cluster: KubeCluster, fence: Fence) -> None:
    obj = consumer("bad-sa", image=f"{ALLOWED_PREFIX}worker:1", serviceAccountName="cluster-admin-ish")
    created, stderr = create(kube_cluster, fence.namespace, obj)
    assert not created
    assert "admissionPolicy.allowedServiceAccounts" in stderr
    assert "cluster-admin-ish" in stderr


def test_secret_references_in_env_are_refused(kube_cluster: KubeCluster, fence: Fence) -> None:
    env = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    created, stderr = create(kube_cluster, fence.namespace, consumer("bad-env", env=env))
    assert not created
    assert "admissionPolicy.allowSecretReferences" in stderr
    assert "DB_PASSWORD" in stderr
    env_from = [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "everything"}}]
    created, stderr = create(kube_cluster, fence.namespace, consumer("bad-envfrom", envFrom=env_from))
    assert not created
    assert "admissionPolicy.allowSecretReferences" in stderr
    assert '"everything"' in stderr


def test_refused_nsqconsumers_say_which_rule_and_leave_nothing_behind(
    kube_cluster: KubeCluster, fence: Fence, row: Row
) -> None:
    """The RELIABILITY.md row: what a team member sees when the fence refuses an NsqConsumer."""
    row.order, row.section = 5.3, "Operations"
    row.scenario = "NsqConsumers the chart's admission policy refuses (the confused-deputy fence)"
    row.load = (
        f"admissionPolicy on: images under {ALLOWED_PREFIX} or docker.io/library/python:, ServiceAccount "
        f"{ALLOWED_ACCOUNT}, no Secret references; enforced by the real API server"
    )
    secret_env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    refused: dict[str, dict[str, Any]] = {
        "look-alike": {"image": "registry.example.com/team-a-evil/worker:1"},
        "other-account": {"image": f"{ALLOWED_PREFIX}worker:1", "serviceAccountName": "deploy-bot"},
        "env-secret": {"env": secret_env},
        "envfrom-secret": {"envFrom": [{"secretRef": {"name": "everything"}}]},
    }
    row.fault = "kubectl create of 4 NsqConsumers: " + "; ".join(
        f"{name}: {json.dumps(worker)}" for name, worker in refused.items()
    )
    rules = {
        "look-alike": "admissionPolicy.allowedImagePrefixes",
        "other-account": "admissionPolicy.allowedServiceAccounts",
        "env-secret": "admissionPolicy.allowSecretReferences",
        "envfrom-secret": "admissionPolicy.allowSecretReferences",
    }
    for name, worker in refused.items():
        created, stderr = create(kube_cluster, fence.namespace, consumer(name, **worker))
        assert not created, name
        assert rules[name] in stderr, stderr
        said = " ".join(stderr.split())
        row.see(f"{name}: refused, '{said.partition('denied request: ')[2][:200]}'")
    stored = {i["metadata"]["name"] for i in kube_cluster.get_json("nsqc", "-n", fence.namespace)["items"]}
    assert not stored & set(refused)
    row.see("none of the four stored (kubectl get nsqc), so the operator never acted for them")


def test_an_update_to_a_disallowed_image_is_refused(kube_cluster: KubeCluster, fence: Fence) -> None:
    created, stderr = create(
        kube_cluster, fence.namespace, consumer("later-bad", image=f"{ALLOWED_PREFIX}w:1")
    )
    assert created, stderr
    patch = json.dumps({"spec": {"worker": {"image": "evil.example.com/miner:2"}}})
    result = kube_cluster.kubectl(
        "patch", "nsqc", "later-bad", "-n", fence.namespace, "--type=merge", "-p", patch, check=False
    )
    assert result.returncode != 0
    assert "admissionPolicy.allowedImagePrefixes" in result.stderr
    kept = kube_cluster.get_json("nsqc", "later-bad", "-n", fence.namespace)
    assert kept["spec"]["worker"]["image"] == f"{ALLOWED_PREFIX}w:1"


def test_an_allowed_nsqconsumer_is_accepted(kube_cluster: KubeCluster, fence: Fence) -> None:
    worker = {
        "image": f"{ALLOWED_PREFIX}worker:1.2",
        "serviceAccountName": ALLOWED_ACCOUNT,
        "env": [
            {"name": "MODE", "value": "fast"},
            {"name": "SETTING", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "auth": {"secretName": "nsq-auth"},  # the CRD's own Secret fields stay allowed
        "tls": {"secretName": "nsq-tls"},
        "imagePullSecrets": [{"name": "registry"}],
    }
    created, stderr = create(kube_cluster, fence.namespace, consumer("good", **worker))
    assert created, stderr
    # Neither image nor ServiceAccount set: the chart's default image, and no API token.
    created, stderr = create(kube_cluster, fence.namespace, consumer("defaults"))
    assert created, stderr
    names = {i["metadata"]["name"] for i in kube_cluster.get_json("nsqc", "-n", fence.namespace)["items"]}
    assert {"good", "defaults"} <= names


def test_the_policy_is_off_by_default_and_renders_nothing_without_a_rule() -> None:
    def kinds(*sets: str) -> list[str]:
        args = [a for s in sets for a in ("--set", s)]
        out = helm("template", "t", str(CHART), "--kube-version", KUBE_VERSION, *args).stdout
        return [doc["kind"] for doc in yaml.safe_load_all(out) if doc]

    assert "ValidatingAdmissionPolicy" not in kinds()
    assert "Deployment" in kinds()
    on = kinds("admissionPolicy.enabled=true")  # Secret references are refused by default
    assert on.count("ValidatingAdmissionPolicy") == on.count("ValidatingAdmissionPolicyBinding") == 1
    assert "ValidatingAdmissionPolicy" not in kinds(
        "admissionPolicy.enabled=true", "admissionPolicy.allowSecretReferences=true"
    )


def test_aggregated_roles_give_edit_write_and_view_read_on_nsqconsumers(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    install_crd(kube_cluster)
    roles = render(f"agg-{uuid.uuid4().hex[:6]}", show_only="templates/aggregate-roles.yaml")
    assert [r["kind"] for r in roles] == ["ClusterRole", "ClusterRole"]
    for role in roles:
        kube_cluster.apply(role)
    try:
        for account, builtin in (("editor", "edit"), ("viewer", "view")):
            kube_cluster.kubectl("create", "serviceaccount", account, "-n", kube_namespace)
            kube_cluster.kubectl(
                "create", "rolebinding", account, f"--clusterrole={builtin}",
                f"--serviceaccount={kube_namespace}:{account}", "-n", kube_namespace,
            )  # fmt: skip

        def can(account: str, verb: str, resource: str = "nsqconsumers.nsqoperator.dev") -> str:
            who = f"--as=system:serviceaccount:{kube_namespace}:{account}"
            result = kube_cluster.kubectl(
                "auth", "can-i", verb, resource, "-n", kube_namespace, who, check=False
            )
            return result.stdout.strip()

        # The clusterrole-aggregation controller folds the new rules into edit/view a moment later.
        deadline = time.monotonic() + 60
        while (can("editor", "create"), can("viewer", "list")) != ("yes", "yes"):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not aggregated in 60 s: {can('editor', 'create')}, {can('viewer', 'list')}"
                )
            time.sleep(0.5)
        for verb in ("create", "update", "patch", "delete", "get", "list", "watch"):
            assert can("editor", verb) == "yes", verb
        for verb in ("get", "list", "watch"):
            assert can("viewer", verb) == "yes", verb
            assert can("viewer", verb, "nsqconsumers.nsqoperator.dev/status") == "yes", verb
        for verb in ("create", "update", "patch", "delete"):
            assert can("viewer", verb) == "no", verb
        edit = kube_cluster.get_json("clusterrole", "edit")
        assert any("nsqconsumers" in rule.get("resources", []) for rule in edit["rules"])
    finally:
        for role in roles:
            kube_cluster.kubectl(
                "delete", "clusterrole", role["metadata"]["name"], "--ignore-not-found", check=False
            )


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("admissionPolicy.enabled=maybe", "/admissionPolicy/enabled"),
        (
            "admissionPolicy.allowedImagePrefixes={registry.example.com/team}",
            "/admissionPolicy/allowedImagePrefixes/0",
        ),
        (
            "admissionPolicy.allowedServiceAccounts={Not_An_Account}",
            "/admissionPolicy/allowedServiceAccounts/0",
        ),
        ("admissionPolicy.validationActions={Block}", "/admissionPolicy/validationActions/0"),
        ("admissionPolicy.validationActions={Deny,Warn}", "/admissionPolicy/validationActions"),
        ("admissionPolicy.validationActions={}", "/admissionPolicy/validationActions"),
        ("rbac.aggregateToDefaultRoles=maybe", "/rbac/aggregateToDefaultRoles"),
    ],
)
def test_values_schema_rejects_wrong_admission_values(setting: str, complaint: str) -> None:
    result = helm("template", "t", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr
