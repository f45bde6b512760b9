"""The operator image on the real Docker engine: it starts, reaches the rig's API server and reconciles."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Images
from tests.rig.docker import docker
from tests.rig.helm import CHART, helm
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster
from tests.rig.procs import free_port

HARDENED = ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--tmpfs=/tmp"]


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"nsq-operator-{uuid.uuid4().hex[:8]}"
    yield name
    docker("rm", "-f", name, check=False)


def test_operator_image_runs_as_non_root_and_reconciles(
    images: Images, kube_cluster: KubeCluster, kube_namespace: str, nsq_cluster: NsqCluster,
    container_name: str, tmp_path: Path,
) -> None:  # fmt: skip
    config = json.loads(docker("image", "inspect", images.operator).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["nsq-operator"]
    # Its RBAC from the chart (no operator Deployment needed here), and a token for its ServiceAccount.
    home = f"nsq-img-{uuid.uuid4().hex[:6]}"
    helm("install", "img", str(CHART), "-n", home, "--create-namespace", "--set", "crds.install=false",
         "--set", f"watchNamespaces={{{kube_namespace}}}", kubeconfig=kube_cluster.kubeconfig)  # fmt: skip
    try:
        kubeconfig = kube_cluster.service_account_kubeconfig(
            home, "img-nsq-operator", tmp_path / "kubeconfig"
        )
        for nsqd in nsq_cluster.nsqds:
            nsqd.create_topic("image", "e2e")
        port = free_port()
        docker(
            "run", "-d", "--name", container_name, "--network=host", *HARDENED,
            "-v", f"{kubeconfig}:/config/kubeconfig:ro", "-e", "KUBECONFIG=/config/kubeconfig",
            images.operator, "run", f"--namespace={kube_namespace}", f"--liveness=http://127.0.0.1:{port}/healthz",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, docker("logs", container_name).stderr[-3000:]
            time.sleep(0.3)
        consumer = {
            "apiVersion": "nsqoperator.dev/v1alpha1", "kind": "NsqConsumer", "metadata": {"name": "image"},
            "spec": {"topic": "image", "channel": "e2e",
                     "lookupd": {"httpAddresses": nsq_cluster.lookupd_http_urls, "pollIntervalSeconds": 1}},
        }  # fmt: skip
        kube_cluster.kubectl("apply", "-n", kube_namespace, "-f", "-", input=json.dumps(consumer))
        kube_cluster.wait_for(
            lambda: (
                kube_cluster.get_json("nsqc", "image", "-n", kube_namespace)
                .get("status", {})
                .get("nsqdCount")
                == 2
            ),
            timeout=60,
            what="the operator in its container to reconcile",
        )
        assert docker("inspect", "-f", "{{.State.Running}}", container_name).stdout.strip() == "true"
        docker("stop", "--time=20", container_name)
        assert docker("inspect", "-f", "{{.State.ExitCode}}", container_name).stdout.strip() == "0"
    finally:
        kube_cluster.kubectl("delete", "nsqc", "image", "-n", kube_namespace, "--wait=false", check=False)
        helm("uninstall", "img", "-n", home, kubeconfig=kube_cluster.kubeconfig, check=False)
