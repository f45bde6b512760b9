"""The Helm chart: lint, schema, the CRD copy, and what the real API server thinks of its output."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.rig.helm import CHART, KUBE_VERSION, helm
from tests.rig.kube import KubeCluster
from tests.rig.tools import PROJECT_ROOT

CRD_SOURCE = PROJECT_ROOT / "deploy" / "crds" / "nsqconsumers.nsqoperator.dev.yaml"


def test_chart_ships_the_same_crd_as_deploy_crds() -> None:
    assert (CHART / "files" / CRD_SOURCE.name).read_bytes() == CRD_SOURCE.read_bytes(), (
        "deploy/helm/nsq-operator/files is out of date: run `make chart-crd`"
    )


def test_the_crd_is_a_template_helm_upgrades_and_uninstall_keeps() -> None:
    """Helm never upgrades a chart's crds/ folder, so the CRD is rendered from a template instead."""
    assert not (CHART / "crds").exists(), "a crds/ folder would be installed once and never upgraded"
    crds: list[Any] = [d for d in rendered() if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 1
    assert crds[0]["spec"] == yaml.safe_load(CRD_SOURCE.read_text())["spec"]
    assert crds[0]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    kinds = [d["kind"] for d in rendered("crds.install=false")]
    assert "CustomResourceDefinition" not in kinds
    assert "Deployment" in kinds
    unkept: list[Any] = [d for d in rendered("crds.keep=false") if d["kind"] == "CustomResourceDefinition"]
    assert "annotations" not in unkept[0]["metadata"]


def test_helm_lint_strict_passes() -> None:
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("logLevel=loud", "/logLevel"),
        ("healthPort=0", "/healthPort"),
        ("rbac.create=maybe", "/rbac/create"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("replicaCount=-1", "/replicaCount"),
        ("leaderElection.enabled=maybe", "/leaderElection/enabled"),
        ("leaderElection.namespace=x", "namespace"),
        ("unknownKey=1", "unknownKey"),
    ],
)
def test_values_schema_rejects_wrong_values(setting: str, complaint: str) -> None:
    result = helm("template", "t", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr


def rendered(*sets: str, release: str = "nsq-operator") -> list[dict[str, object]]:
    args = [a for s in sets for a in ("--set", s)]
    out = helm(
        "template",
        release,
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "-n",
        "nsq-system",
        "--include-crds",
        *args,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_watching_named_namespaces_makes_a_role_per_namespace_and_no_cluster_wide_write() -> None:
    docs = rendered("watchNamespaces={team-a,team-b}")
    roles = sorted((d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Role")  # type: ignore[index]
    assert roles == [
        ("nsq-system", "nsq-operator-leader-election"),  # the Lease, in the release namespace only
        ("team-a", "nsq-operator"),
        ("team-b", "nsq-operator"),
    ]
    # The ClusterRoles bound to the operator; the aggregated ones (aggregate-roles.yaml) are bound by no
    # one in the chart: they only widen the built-in edit/admin/view that users bind themselves.
    bound = {d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"}  # type: ignore[index]
    for cluster_role in (d for d in docs if d["kind"] == "ClusterRole"):
        meta: dict[str, Any] = cluster_role["metadata"]  # type: ignore[assignment]
        aggregated = any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in meta["labels"])
        assert aggregated != (meta["name"] in bound), meta
        if aggregated:
            continue
        for rule in cluster_role["rules"]:  # type: ignore[attr-defined]
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def test_no_rule_grants_secrets_or_wildcards() -> None:
    for docs in (rendered(), rendered("watchNamespaces={team-a}")):
        for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
            for rule in role["rules"]:  # type: ignore[attr-defined]
                assert "secrets" not in rule["resources"]
                assert "*" not in rule["resources"]
                assert "*" not in rule["verbs"]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, [d["metadata"]["name"] for d in found]
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def test_by_default_two_replicas_elect_a_leader_and_roll_one_at_a_time() -> None:
    docs: list[dict[str, Any]] = rendered()
    spec = only(docs, "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = operator_container(docs)
    assert "--leader-election-namespace=$(POD_NAMESPACE)" in container["args"]
    assert "--leader-election-name=nsq-operator" in container["args"]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert env["POD_NAME"] == "metadata.name"
    assert env["POD_NAMESPACE"] == "metadata.namespace"
    budget = only(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]


@pytest.mark.parametrize("watch", ["", "watchNamespaces={team-a}"])
def test_leader_election_gets_one_lease_by_name_in_the_release_namespace_only(watch: str) -> None:
    docs: list[dict[str, Any]] = rendered(*([watch] if watch else []), release="blue")
    lease_roles = [
        d for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        and any("leases" in rule["resources"] for rule in d["rules"])
    ]  # fmt: skip
    assert [(d["kind"], d["metadata"].get("namespace")) for d in lease_roles] == [("Role", "nsq-system")]
    assert lease_roles[0]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["blue-nsq-operator"],
            "verbs": ["get", "update"],
        },
    ]
    assert "--leader-election-name=blue-nsq-operator" in operator_container(docs)["args"]
    bindings = [
        d
        for d in docs
        if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == lease_roles[0]["metadata"]["name"]
    ]
    assert len(bindings) == 1
    assert bindings[0]["metadata"]["namespace"] == "nsq-system"
    assert bindings[0]["subjects"] == [
        {"kind": "ServiceAccount", "name": "blue-nsq-operator", "namespace": "nsq-system"}
    ]


def test_without_leader_election_one_replica_is_recreated_and_no_lease_is_granted() -> None:
    docs: list[dict[str, Any]] = rendered("leaderElection.enabled=false", "replicaCount=1")
    spec = only(docs, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert not any(a.startswith("--leader-election") for a in operator_container(docs)["args"])
    assert [d for d in docs if d["kind"] == "PodDisruptionBudget"] == []
    for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
        assert all("leases" not in rule["resources"] for rule in role["rules"]), role["metadata"]["name"]


def test_several_replicas_without_leader_election_are_refused() -> None:
    result = helm(
        "template", "t", str(CHART), "--kube-version", KUBE_VERSION, "--set", "leaderElection.enabled=false",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled" in result.stderr


@pytest.mark.parametrize("watch", ["", "watchNamespaces={default}"])
def test_rendered_chart_is_accepted_by_the_api_server(kube_cluster: KubeCluster, watch: str) -> None:
    docs = rendered(*([watch] if watch else []))
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 1
    kube_cluster.apply(crds[0])
    kube_cluster.kubectl("create", "namespace", "nsq-system", check=False)
    stream = "\n---\n".join(yaml.safe_dump(d) for d in docs if d["kind"] != "CustomResourceDefinition")
    result = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=stream)
    assert "(server dry run)" in result.stdout
