"""`helm install` into the real control plane; the operator reconciles with only its ServiceAccount token."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operators import install_crd
from tests.rig.helm import CHART, helm
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster
from tests.rig.procs import Process, free_port, http_ok
from tests.rig.reporting import attach_logs

OPERATOR = Path(sys.executable).parent / "nsq-operator"
RELEASE = "nsq-operator"


@dataclass(frozen=True)
class Release:
    namespace: str
    service_account: str

    @property
    def who(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@pytest.fixture(scope="module")
def release(kube_cluster: KubeCluster) -> Iterator[Release]:
    namespace = f"nsq-system-{uuid.uuid4().hex[:6]}"
    helm(
        "install", RELEASE, str(CHART), "-n", namespace, "--create-namespace", "--wait", "--timeout=120s",
        "--take-ownership",  # of the CRD, which earlier tests made; the chart installs and upgrades it
        "--set", "image.tag=test", kubeconfig=kube_cluster.kubeconfig,
    )  # fmt: skip
    yield Release(namespace, RELEASE)
    helm("uninstall", RELEASE, "-n", namespace, kubeconfig=kube_cluster.kubeconfig, check=False)


def test_install_creates_the_operator_with_hardened_defaults(
    kube_cluster: KubeCluster, release: Release
) -> None:
    deployment = kube_cluster.get_json("deployment", RELEASE, "-n", release.namespace)
    assert deployment["spec"]["replicas"] == 2  # a leader and a standby (leader election)
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == release.service_account
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = pod_spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["image"] == "nsq-operator/operator:test"
    assert "--leader-election-namespace=$(POD_NAMESPACE)" in container["args"]
    assert deployment["status"].get("readyReplicas") == 2  # kwok runs the pods; --wait saw them ready
    crd = kube_cluster.get_json("crd", "nsqconsumers.nsqoperator.dev")
    assert crd["spec"]["names"]["shortNames"] == ["nsqc"]


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("list", "secrets", "no"),
        ("get", "secrets", "no"),
        ("create", "pods", "no"),
        ("delete", "pods", "no"),
        ("get", "pods/log", "no"),
        ("list", "pods", "yes"),  # read only, to say why a worker is not ready
        ("watch", "pods", "no"),
        ("list", "events", "yes"),
        ("delete", "events", "no"),
        ("create", "clusterrolebindings", "no"),
        ("create", "services", "no"),
        ("update", "customresourcedefinitions", "no"),
        ("create", "deployments.apps", "yes"),
        ("delete", "deployments.apps", "yes"),
        ("patch", "nsqconsumers.nsqoperator.dev/status", "yes"),
        ("delete", "nsqconsumers.nsqoperator.dev", "no"),
        ("create", "events", "yes"),
        ("create", "leases.coordination.k8s.io", "no"),  # only in the release namespace (below)
        ("update", "leases.coordination.k8s.io", "no"),
    ],
)
def test_service_account_has_least_privilege(
    kube_cluster: KubeCluster, release: Release, verb: str, resource: str, allowed: str
) -> None:
    answer = kube_cluster.kubectl("auth", "can-i", verb, resource, "-A", f"--as={release.who}", check=False)
    assert answer.stdout.strip() == allowed, (verb, resource, answer.stdout, answer.stderr)


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("create", "leases.coordination.k8s.io", "yes"),
        ("get", f"leases.coordination.k8s.io/{RELEASE}", "yes"),
        ("update", f"leases.coordination.k8s.io/{RELEASE}", "yes"),
        ("get", "leases.coordination.k8s.io/someone-else", "no"),
        ("update", "leases.coordination.k8s.io/someone-else", "no"),
        ("delete", f"leases.coordination.k8s.io/{RELEASE}", "no"),
        ("list", "leases.coordination.k8s.io", "no"),
        ("watch", "leases.coordination.k8s.io", "no"),
    ],
)
def test_service_account_holds_only_its_own_lease_in_the_release_namespace(
    kube_cluster: KubeCluster, release: Release, verb: str, resource: str, allowed: str
) -> None:
    answer = kube_cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", release.namespace, f"--as={release.who}", check=False
    )
    assert answer.stdout.strip() == allowed, (verb, resource, answer.stdout, answer.stderr)
    elsewhere = kube_cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", "default", f"--as={release.who}", check=False
    )
    assert elsewhere.stdout.strip() == "no", (verb, resource, elsewhere.stdout, elsewhere.stderr)


def nsq_consumer(name: str, lookupds: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "nsqoperator.dev/v1alpha1",
        "kind": "NsqConsumer",
        "metadata": {"name": name},
        "spec": {
            "topic": "helm",
            "channel": "e2e",
            "lookupd": {"httpAddresses": lookupds, "pollIntervalSeconds": 1},
            "nsqdRemovalGraceSeconds": 2,
        },
    }


@contextmanager
def operator_as(
    kube_cluster: KubeCluster, release: Release, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Process]:
    """`nsq-operator run` with nothing but the chart's ServiceAccount token, until the block ends."""
    token_config = kube_cluster.service_account_kubeconfig(
        release.namespace, release.service_account, tmp_path / "operator-kubeconfig"
    )
    assert "client-key" not in token_config.read_text()
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    operator = Process(
        "operator", [str(OPERATOR), "run", "--all-namespaces", "--liveness", liveness],
        tmp_path / "operator.log", env={"KUBECONFIG": str(token_config), "PYTHONUNBUFFERED": "1"},
    ).start()  # fmt: skip
    attach_logs(request, [tmp_path / "operator.log"])
    try:
        operator.wait_until(http_ok(liveness), timeout=60, what="live")
        yield operator
    finally:
        operator.stop()


def apply_and_reconcile(kube_cluster: KubeCluster, namespace: str, nsq_cluster: NsqCluster) -> None:
    """The NsqConsumer `orders` on the rig's NSQ, waited for until both its workers are ready."""
    for nsqd in nsq_cluster.nsqds:
        nsqd.create_topic("helm", "e2e")
    body = json.dumps(nsq_consumer("orders", nsq_cluster.lookupd_http_urls))
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=body)

    def ready() -> bool:
        status = kube_cluster.get_json("nsqc", "orders", "-n", namespace).get("status", {})
        return bool(status.get("nsqdCount") == 2 and status.get("readyWorkers") == 2)

    kube_cluster.wait_for(ready, timeout=60, what="two ready workers in the status")


def test_operator_reconciles_end_to_end_with_its_service_account_token(
    kube_cluster: KubeCluster, release: Release, kube_namespace: str, nsq_cluster: NsqCluster,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    try:
        with operator_as(kube_cluster, release, tmp_path, request) as operator:
            apply_and_reconcile(kube_cluster, kube_namespace, nsq_cluster)
            deployments = kube_cluster.get_json(
                "deployments", "-n", kube_namespace, "-l", "nsqoperator.dev/consumer=orders"
            )["items"]
            assert len(deployments) == 2
            events = kube_cluster.get_json("events", "-n", kube_namespace)["items"]
            assert any(e["involvedObject"]["name"] == "orders" for e in events)
            assert "Forbidden" not in operator.log_path.read_text()
    finally:
        kube_cluster.kubectl("delete", "nsqc", "orders", "-n", kube_namespace, "--wait=false", check=False)


def test_a_namespaced_install_grants_rights_only_where_it_watches(kube_cluster: KubeCluster) -> None:
    watched, other = f"team-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    for namespace in (watched, other):
        kube_cluster.kubectl("create", "namespace", namespace)
    home = f"nsq-ns-{uuid.uuid4().hex[:6]}"
    helm(
        "install", "scoped", str(CHART), "-n", home, "--create-namespace", "--set", "crds.install=false",
        "--set", f"watchNamespaces={{{watched}}}", kubeconfig=kube_cluster.kubeconfig,
    )  # fmt: skip
    try:
        who = f"--as=system:serviceaccount:{home}:scoped-nsq-operator"
        can = kube_cluster.kubectl(
            "auth", "can-i", "create", "deployments.apps", "-n", watched, who, check=False
        )
        assert can.stdout.strip() == "yes"
        cannot = kube_cluster.kubectl(
            "auth", "can-i", "create", "deployments.apps", "-n", other, who, check=False
        )
        assert cannot.stdout.strip() == "no"
        args = kube_cluster.get_json("deployment", "scoped-nsq-operator", "-n", home)["spec"]["template"][
            "spec"
        ]
        assert f"--namespace={watched}" in args["containers"][0]["args"]
    finally:
        helm("uninstall", "scoped", "-n", home, kubeconfig=kube_cluster.kubeconfig, check=False)


def test_uninstall_leaves_nothing_but_the_crd_which_then_deletes_without_an_operator(
    kube_cluster: KubeCluster, release: Release, kube_namespace: str, nsq_cluster: NsqCluster,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    with operator_as(kube_cluster, release, tmp_path, request):
        apply_and_reconcile(kube_cluster, kube_namespace, nsq_cluster)
    assert not kube_cluster.get_json("nsqc", "orders", "-n", kube_namespace)["metadata"].get("finalizers")

    helm("uninstall", RELEASE, "-n", release.namespace, "--wait", kubeconfig=kube_cluster.kubeconfig)
    selector = f"app.kubernetes.io/instance={RELEASE}"
    for kind in ("deployments", "serviceaccounts", "roles", "rolebindings", "poddisruptionbudgets"):
        assert kube_cluster.get_json(kind, "-n", release.namespace, "-l", selector)["items"] == [], kind
    for kind in ("clusterroles", "clusterrolebindings"):
        left = [i["metadata"]["name"] for i in kube_cluster.get_json(kind, "-l", selector)["items"]]
        assert left == [], kind
    assert kube_cluster.kubectl("get", "crd", "nsqconsumers.nsqoperator.dev", check=False).returncode == 0

    # With the operator gone and a consumer still there, the CRD deletes: no finalizer holds it.
    try:
        kube_cluster.kubectl("delete", "crd", "nsqconsumers.nsqoperator.dev", "--timeout=60s")
        assert kube_cluster.kubectl("get", "crd", "nsqconsumers.nsqoperator.dev", check=False).returncode != 0
    finally:  # the other tests of the session still need it
        install_crd(kube_cluster)
