"""The Helm chart: lint, schema, the CRD copy, and what the real API server thinks of its output."""

from __future__ import annotations

import pytest
import yaml

from tests.rig.helm import CHART, KUBE_VERSION, helm
from tests.rig.kube import KubeCluster
from tests.rig.tools import PROJECT_ROOT

CRD_SOURCE = PROJECT_ROOT / "deploy" / "crds" / "nsqconsumers.nsqoperator.dev.yaml"


def test_chart_ships_the_same_crd_as_deploy_crds() -> None:
    assert (CHART / "crds" / CRD_SOURCE.name).read_bytes() == CRD_SOURCE.read_bytes(), (
        "deploy/helm/nsq-operator/crds is out of date: run `make chart-crd`"
    )


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
        ("unknownKey=1", "unknownKey"),
    ],
)
def test_values_schema_rejects_wrong_values(setting: str, complaint: str) -> None:
    result = helm("template", "t", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr


def rendered(*sets: str) -> list[dict[str, object]]:
    args = [a for s in sets for a in ("--set", s)]
    out = helm(
        "template",
        "nsq-operator",
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
    roles = sorted((d["metadata"]["namespace"], d["kind"]) for d in docs if d["kind"] == "Role")  # type: ignore[index]
    assert roles == [("team-a", "Role"), ("team-b", "Role")]
    for cluster_role in (d for d in docs if d["kind"] == "ClusterRole"):
        for rule in cluster_role["rules"]:  # type: ignore[attr-defined]
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def test_no_rule_grants_secrets_or_wildcards() -> None:
    for docs in (rendered(), rendered("watchNamespaces={team-a}")):
        for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
            for rule in role["rules"]:  # type: ignore[attr-defined]
                assert "secrets" not in rule["resources"]
                assert "*" not in rule["resources"]
                assert "*" not in rule["verbs"]


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
