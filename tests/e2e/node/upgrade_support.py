"""What the helm upgrade test needs beyond the node's support: the previous release from a git worktree,
snapshots of the workers, a steady publisher, and the scenario's RELIABILITY.md row.

Nothing here is a test.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.e2e.node.support import CONSUMER_LABEL, ready
from tests.reliability import support as reliability
from tests.rig.kube import KubeCluster
from tests.rig.nsq import Nsqd
from tests.rig.procs import RigError
from tests.rig.tools import PROJECT_ROOT

CRD_NAME = "nsqconsumers.nsqoperator.dev"
CRD_FILE = "nsqconsumers.nsqoperator.dev.yaml"
GROUP_PATH = "/apis/nsqoperator.dev/v1alpha1"


# -- the previous release, from a git worktree ---------------------------------------------------------


def git(*args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise RigError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A detached git worktree of `commit` under the rig's scratch directory (.rig/), removed afterwards."""
    full = git("rev-parse", "--verify", f"{commit}^{{commit}}").strip()
    path = PROJECT_ROOT / ".rig" / f"upgrade-from-{full[:7]}-{uuid.uuid4().hex[:6]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    git("worktree", "add", "--detach", str(path), full)
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))
        git("worktree", "prune")


def crd_spec_fields(crd: dict[str, Any]) -> set[str]:
    """The top-level fields of an NsqConsumer's spec that a CRD's (first) version keeps."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return set(schema["properties"]["spec"]["properties"])


def previous_chart(tree: Path, new_field: str) -> Path:
    """The chart of the previous release, checked to be what the test says it is: its CRD in crds/ (which
    helm installs once and never upgrades), without `new_field`, which the current CRD has."""
    chart = tree / "deploy" / "helm" / "nsq-operator"
    old_crd = chart / "crds" / CRD_FILE
    if not old_crd.is_file() or (chart / "templates" / "crd.yaml").exists():
        raise RigError(
            f"the previous chart at {tree} does not ship its CRD in crds/: not the case under test"
        )
    old_fields = crd_spec_fields(yaml.safe_load(old_crd.read_text()))
    current = crd_spec_fields(yaml.safe_load((PROJECT_ROOT / "deploy" / "crds" / CRD_FILE).read_text()))
    if new_field in old_fields or new_field not in current:
        raise RigError(
            f"spec.{new_field} must be new in the current CRD: previous {sorted(old_fields)}, "
            f"current {sorted(current)}"
        )
    return chart


# -- the API, read and patched directly ---------------------------------------------------------------


class Api(reliability.Api):
    """Requests against the rig's API server with the admin certificate, patches too (field validation
    is a query parameter that kubectl does not expose for every verb)."""

    def merge_patch(
        self, namespace: str, name: str, patch: dict[str, Any], validation: str
    ) -> requests.Response:
        return self.session.patch(
            f"{self.kube.server}{GROUP_PATH}/namespaces/{namespace}/nsqconsumers/{name}",
            params={"fieldValidation": validation}, data=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"}, timeout=30, **self.tls,
        )  # fmt: skip


# -- snapshots of the workers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    """One worker Deployment as the API server stores it, and the live pods it selects."""

    name: str
    uid: str
    generation: int
    spec_hash: str
    template: dict[str, Any]
    pods: dict[str, bool]  # pod uid -> Ready


def workers(kube: KubeCluster, namespace: str) -> dict[str, Worker]:
    """Every worker Deployment of the namespace, by name, with the uids of the pods it selects."""
    deployments = kube.get_json("deployments", "-n", namespace, "-l", CONSUMER_LABEL)["items"]
    pods = [
        p for p in kube.get_json("pods", "-n", namespace, "-l", CONSUMER_LABEL)["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip
    found = {}
    for d in deployments:
        selector = d["spec"]["selector"]["matchLabels"]
        mine = [p for p in pods if selector.items() <= p["metadata"].get("labels", {}).items()]
        found[d["metadata"]["name"]] = Worker(
            name=d["metadata"]["name"],
            uid=d["metadata"]["uid"],
            generation=d["metadata"]["generation"],
            spec_hash=d["metadata"].get("annotations", {}).get("nsqoperator.dev/spec-hash", ""),
            template=d["spec"]["template"],
            pods={p["metadata"]["uid"]: ready(p) for p in mine},
        )
    return found


def rolled_out(kube: KubeCluster, namespace: str) -> list[str]:
    """The worker Deployments whose rollout is not complete (empty: all done, every pod Ready)."""
    pending = []
    for d in kube.get_json("deployments", "-n", namespace, "-l", CONSUMER_LABEL)["items"]:
        status, want = d.get("status", {}), d["spec"].get("replicas", 1)
        done = (
            status.get("observedGeneration") == d["metadata"]["generation"]
            and status.get("replicas", 0) == want
            and status.get("updatedReplicas", 0) == want
            and status.get("readyReplicas", 0) == want
            and status.get("availableReplicas", 0) == want
        )
        if not done:
            pending.append(f"{d['metadata']['name']}: {json.dumps(status, sort_keys=True)[:300]}")
    return pending


def wait(kube: KubeCluster, check: Callable[[], Any], timeout: float, what: str,
         describe: Callable[[], Any] | None = None) -> None:  # fmt: skip
    """kube.wait_for (which fails when a control-plane process dies), saying the state on a timeout."""
    try:
        kube.wait_for(check, timeout=timeout, what=what)
    except RigError as error:
        state = describe() if describe is not None else None
        raise AssertionError(f"{error}; state: {state!r}"[:4000]) from None


def operator_metric(pod: dict[str, Any], sample: str, port: int = 8080) -> float:
    """One sample (name and labels, as written) of an operator pod's /metrics, read at its address on
    the bridge; 0 when it is not there yet."""
    text = requests.get(f"http://{pod['status']['podIP']}:{port}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(sample)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# -- a steady publisher --------------------------------------------------------------------------------


class Publisher(threading.Thread):
    """Publishes a small batch of unique bodies to every nsqd every `every` seconds until stopped,
    retrying a batch nsqd refuses; `published[nsqd]` counts what each nsqd answered 200 to."""

    def __init__(self, nsqds: list[Nsqd], topic: str, batch: int = 5, every: float = 0.5) -> None:
        super().__init__(daemon=True, name="upgrade-publisher")
        self.nsqds, self.topic, self.batch, self.every = nsqds, topic, batch, every
        self.published = {n.tcp_address: 0 for n in nsqds}
        self.refused = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            sequence = 0
            while not self._halt.is_set():
                for nsqd in self.nsqds:
                    bodies = [json.dumps({"live": sequence + i}).encode() for i in range(self.batch)]
                    try:
                        nsqd.publish(self.topic, bodies, batch=self.batch)
                    except requests.RequestException:
                        self.refused += 1
                        continue
                    self.published[nsqd.tcp_address] += self.batch
                    sequence += self.batch
                self._halt.wait(self.every)
        except BaseException as error:  # reported by stop()
            self.error = error

    def stop(self) -> dict[str, int]:
        self._halt.set()
        self.join(30)
        if self.error is not None:
            raise self.error
        return self.published
