"""The Kubernetes part of the rig is real: controllers, the scheduler, kwok and the garbage collector work."""

from __future__ import annotations

from typing import Any

from tests.rig.kube import KubeCluster


def deployment(name: str, namespace: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "blockOwnerDeletion": True,
            }
        ]
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "rig.invalid/none:0"}]},
            },
        },
    }


def test_deployment_gets_a_replicaset_and_a_running_pod(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.apply(deployment("web", kube_namespace))

    def running_pod() -> bool:
        pods = kube_cluster.get_json("pods", "-n", kube_namespace, "-l", "app=web")["items"]
        return len(pods) == 1 and pods[0]["status"].get("phase") == "Running"

    kube_cluster.wait_for(running_pod, timeout=60, what="a Running pod of the Deployment")
    replicasets = kube_cluster.get_json("replicasets", "-n", kube_namespace, "-l", "app=web")["items"]
    assert [rs["metadata"]["ownerReferences"][0]["name"] for rs in replicasets] == ["web"]
    pod = kube_cluster.get_json("pods", "-n", kube_namespace, "-l", "app=web")["items"][0]
    assert pod["spec"]["nodeName"].startswith("kwok-node-")
    assert pod["metadata"]["ownerReferences"][0]["name"] == replicasets[0]["metadata"]["name"]


def test_deleting_an_owner_garbage_collects_what_it_owns(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.kubectl("create", "configmap", "owner", "-n", kube_namespace)
    owner = kube_cluster.get_json("configmap", "owner", "-n", kube_namespace)
    kube_cluster.apply(deployment("owned", kube_namespace, owner))
    kube_cluster.wait_for(
        lambda: kube_cluster.get_json("pods", "-n", kube_namespace, "-l", "app=owned")["items"],
        timeout=60,
        what="the owned Deployment's pod",
    )

    kube_cluster.kubectl("delete", "configmap", "owner", "-n", kube_namespace)

    def all_gone() -> bool:
        left = [
            kube_cluster.get_json(kind, "-n", kube_namespace, "-l", "app=owned")["items"]
            for kind in ("deployments", "replicasets", "pods")
        ]
        return not any(left)

    kube_cluster.wait_for(all_gone, timeout=60, what="the garbage collector to remove the owned objects")


def test_service_accounts_get_tokens_and_rbac_is_enforced(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.kubectl("create", "serviceaccount", "nobody", "-n", kube_namespace)
    token = kube_cluster.kubectl("create", "token", "nobody", "-n", kube_namespace).stdout.strip()
    assert token.count(".") == 2
    who = f"system:serviceaccount:{kube_namespace}:nobody"
    can = kube_cluster.kubectl(
        "auth", "can-i", "list", "secrets", "-n", kube_namespace, f"--as={who}", check=False
    )
    assert can.stdout.strip() == "no"
