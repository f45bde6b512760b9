"""Watching worker Deployments roll out, judged the way `kubectl rollout status` judges them.

Shared by the rollout tests of the operator and the reliability suite: every state the API server
reported is kept, so a test can check a bound at every moment, not only at the moments it polled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.operators import Namespace
from tests.rig.kube import KubeCluster
from tests.rig.watch import KubectlWatch


class DeploymentWatch(KubectlWatch):
    """Every state the API server reports for the namespace's Deployments, in its order."""

    def __init__(self, kube: KubeCluster, namespace: str, path: Path) -> None:
        super().__init__(kube, ["deployments", "-n", namespace], path)

    def timeline(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The namespace's Deployments after each event, by name."""
        current: dict[str, dict[str, Any]] = {}
        for event in self.events():
            body = event["object"]
            if event["type"] == "DELETED":
                current.pop(body["metadata"]["name"], None)
            else:
                current[body["metadata"]["name"]] = body
            yield current


def mid_rollout(deployment: dict[str, Any]) -> bool:
    """`kubectl rollout status` would still wait: the controller has not seen the spec, or not every
    pod runs the current template, or not every new pod is available."""
    status = deployment.get("status") or {}
    if status.get("observedGeneration", 0) < deployment["metadata"]["generation"]:
        return True
    wanted = deployment["spec"].get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    return bool(
        updated < wanted
        or status.get("replicas", 0) > updated
        or status.get("availableReplicas", 0) < updated
    )


def image(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def settled(ns: Namespace, names: list[str], count: int, want_image: str | None = None) -> bool:
    found = [d for name in names for d in ns.deployments(name).values()]
    return len(found) == count and all(
        (want_image is None or image(d) == want_image) and not mid_rollout(d) for d in found
    )


def most_at_once(watch: DeploymentWatch) -> int:
    """The most Deployments mid-rollout at the same moment, over everything the watch saw."""
    return max((sum(mid_rollout(d) for d in state.values()) for state in watch.timeline()), default=0)
