"""The operator's reads of worker pods and their events, against the real API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config

from nsq_operator import naming
from nsq_operator.kube import Kube, KubeError
from nsq_operator.manifests import labels
from nsq_operator.resource import ANNOTATION_NSQD_ADDRESS, LABEL_NSQD
from tests.rig.kube import KubeCluster

pytestmark = pytest.mark.kube

A, B = "10.0.0.1:4150", "10.0.0.2:4150"


def kube_as(kubeconfig: Path) -> Kube:
    loader: Any = config
    return Kube(loader.new_client_from_config(str(kubeconfig)))


def worker_pod(consumer: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{consumer}-{naming.nsqd_hash(consumer, address)}-x",
            "labels": {**labels(consumer), LABEL_NSQD: naming.nsqd_hash(consumer, address)},
            "annotations": {ANNOTATION_NSQD_ADDRESS: address},
        },
        "spec": {"containers": [{"name": "worker", "image": "nsq-operator/worker:test"}]},
    }


def test_only_the_asked_workers_pods_and_their_warnings_are_read(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    ns = kube_namespace
    for address in (A, B):
        kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(worker_pod("orders", address)))
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(worker_pod("other", A)))
    kube = kube_as(kube_cluster.kubeconfig)

    only_a = kube.list_worker_pods(ns, "orders", [naming.nsqd_hash("orders", A)])
    assert [p["metadata"]["annotations"][ANNOTATION_NSQD_ADDRESS] for p in only_a] == [A]
    both = kube.list_worker_pods(ns, "orders", [naming.nsqd_hash("orders", a) for a in (A, B)])
    assert len(both) == 2

    pod = only_a[0]["metadata"]
    event = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{pod['name']}.mount"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod["name"], "uid": pod["uid"],
                           "namespace": ns},
        "type": "Warning", "reason": "FailedMount", "message": 'secret "tls" not found',
        "source": {"component": "kubelet"},
    }  # fmt: skip
    normal = {**event, "metadata": {"name": f"{pod['name']}.pulled"}, "type": "Normal", "reason": "Pulled"}
    for body in (event, normal):
        kube_cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(body))
    warnings = kube.list_pod_warnings(ns, pod["name"])
    assert [(w["reason"], w["message"]) for w in warnings] == [("FailedMount", 'secret "tls" not found')]


def test_a_service_account_without_pod_access_gets_a_clear_error(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    kube_cluster.kubectl("create", "serviceaccount", "bare", "-n", kube_namespace)
    bare = kube_as(kube_cluster.service_account_kubeconfig(kube_namespace, "bare", tmp_path / "kubeconfig"))
    with pytest.raises(KubeError) as refused:
        bare.list_worker_pods(kube_namespace, "orders", [naming.nsqd_hash("orders", A)])
    assert refused.value.status == 403
    assert str(refused.value).startswith("listing the pods of orders: 403 Forbidden")
    with pytest.raises(KubeError) as refused_events:
        bare.list_pod_warnings(kube_namespace, "orders-x")
    assert refused_events.value.status == 403
