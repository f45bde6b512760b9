"""Running `nsq-operator run` against the rig's control plane, and reading what it did through kubectl.

Shared by the operator's integration tests and the reliability suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster
from tests.rig.procs import Process, free_port, http_ok

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "deploy" / "crds" / "nsqconsumers.nsqoperator.dev.yaml"
OPERATOR = Path(sys.executable).parent / "nsq-operator"
TOPIC, CHANNEL = "orders", "billing"


def install_crd(kube: KubeCluster) -> Path:
    """Apply the NsqConsumer CRD from deploy/crds and wait until the API server serves it."""
    kube.kubectl("apply", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/nsqconsumers.nsqoperator.dev")
    return CRD


class Operator(Process):
    """An `nsq-operator run` process, and the base URL of its /healthz, /readyz and /metrics."""

    url: str

    def metrics(self) -> dict[str, float]:
        """Its /metrics as {'name{labels}': value}, comments left out."""
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        return {key: float(value) for key, value in pairs}


def start_operator(
    kube: KubeCluster, namespace: str, log_dir: Path, name: str = "nsq-operator", args: Sequence[str] = ()
) -> Operator:
    """`nsq-operator run` for one namespace, waited for until its liveness endpoint answers."""
    url = f"http://127.0.0.1:{free_port()}"
    process = Operator(
        name,
        [str(OPERATOR), "run", "--namespace", namespace, "--liveness", f"{url}/healthz", "--verbose", *args],
        log_dir / f"{name}.log",
        env={"KUBECONFIG": str(kube.kubeconfig), "PYTHONUNBUFFERED": "1"},
    )
    process.url = url
    process.start()
    process.wait_until(http_ok(f"{url}/healthz"), timeout=60, what="live")
    return process


class Namespace:
    """One test's namespace, its operator, and what the tests read from it through kubectl."""

    def __init__(self, kube: KubeCluster, name: str, log_dir: Path) -> None:
        self.kube = kube
        self.name = name
        self.log_dir = log_dir
        self.operators: list[Operator] = []

    def start_operator(self, *args: str) -> Operator:
        name = f"nsq-operator-{len(self.operators)}"
        process = start_operator(self.kube, self.name, self.log_dir, name, args)
        self.operators.append(process)
        return process

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.kube.kubectl(*args, "-n", self.name, check=check, input=input)

    def apply(self, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=json.dumps(obj), check=check)

    def get(self, *args: str) -> Any:
        return self.kube.get_json(*args, "-n", self.name)

    def deployments(self, consumer: str = "orders") -> dict[str, dict[str, Any]]:
        """The consumer's worker Deployments, by nsqd address."""
        items = self.get("deployments", "-l", f"nsqoperator.dev/consumer={consumer}")["items"]
        return {d["metadata"]["annotations"]["nsqoperator.dev/nsqd-address"]: d for d in items}

    def uids(self) -> dict[str, str]:
        return {address: d["metadata"]["uid"] for address, d in self.deployments().items()}

    def consumer(self, name: str = "orders") -> dict[str, Any]:
        result: dict[str, Any] = self.get("nsqconsumer", name)
        return result

    def status(self, name: str = "orders") -> dict[str, Any]:
        result: dict[str, Any] = self.consumer(name).get("status") or {}
        return result

    def condition(self, type_: str, name: str = "orders") -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == type_), {})

    def missing(self) -> list[str]:
        """nsqd addresses the status shows in their grace period."""
        return [n["address"] for n in self.status().get("nsqds", []) if n.get("missingSince")]

    def events(self, name: str = "orders") -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=NsqConsumer,involvedObject.name={name}"
        items: list[dict[str, Any]] = self.get("events", "--field-selector", selector)["items"]
        return items

    def reasons(self, name: str = "orders") -> list[str]:
        return [e["reason"] for e in self.events(name)]

    def wait(self, predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
        self.kube.wait_for(predicate, timeout=timeout, what=what)

    def wait_condition(self, type_: str, status: str, reason: str | None = None) -> None:
        def holds() -> bool:
            found = self.condition(type_)
            return found.get("status") == status and (reason is None or found.get("reason") == reason)

        self.wait(holds, f"{type_}={status}" + (f" ({reason})" if reason else ""))


@contextmanager
def operated(kube: KubeCluster, name: str, log_dir: Path) -> Iterator[Namespace]:
    """The namespace with an operator watching it until the block ends."""
    namespace = Namespace(kube, name, log_dir)
    namespace.start_operator()
    try:
        yield namespace
    finally:
        namespace.kubectl("delete", "nsqconsumers", "--all", "--timeout=30s", check=False)
        for process in namespace.operators:
            process.stop()


def consumer(lookupd: list[str], name: str = "orders", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nsqoperator.dev/v1alpha1",
        "kind": "NsqConsumer",
        "metadata": {"name": name},
        "spec": {
            "topic": TOPIC,
            "channel": CHANNEL,
            "lookupd": {"httpAddresses": lookupd, "pollIntervalSeconds": 1},
            "nsqdRemovalGraceSeconds": 2,
            **spec,
        },
    }


def topic_everywhere(nsq: NsqCluster) -> list[str]:
    for nsqd in nsq.nsqds:
        nsqd.create_topic(TOPIC)
    addresses = sorted(n.tcp_address for n in nsq.nsqds)
    nsq.wait_for_producers(TOPIC, addresses)
    return addresses


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}
