"""A real Kubernetes control plane on this machine, in the manner of controller-runtime's envtest.

etcd, kube-apiserver (RBAC, service-account tokens), kube-controller-manager (garbage collector,
Deployments, ReplicaSets, service-account tokens), kube-scheduler and kwok with two fake nodes, so
pods are scheduled and report Running without a kubelet or a container runtime (the scale tests).
A real node (tests/rig/node.py) can join it; for that the API server listens on the rig's bridge
gateway (tests/rig/hostnet.py), a local address that pods reach through the `kubernetes` Service,
and its serving certificate names that address, the first service IP and kubernetes.default.svc.
Everything else listens on loopback.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.rig import hostnet
from tests.rig.certs import Pki
from tests.rig.procs import Process, RigError, free_port, http_ok, tail
from tests.rig.tools import binary

FAKE_NODES = ("kwok-node-0", "kwok-node-1")


def kubeconfig_yaml(server: str, ca: Path, user: dict[str, str], name: str = "rig") -> str:
    """A kubeconfig (JSON is valid YAML) for one user of the rig's API server."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    }
    return json.dumps(config, indent=2)


def fake_node(name: str) -> dict[str, Any]:
    """A Node that kwok manages: 32 CPUs, so many single-CPU workers fit on two of them."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "250"},
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "250"},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
        },
    }


@dataclass
class KubeCluster:
    """The running control plane; `kubeconfig` is an admin kubeconfig file."""

    root: Path
    processes: list[Process] = field(default_factory=list)
    api_port: int = 0
    bridge_claim: Path | None = None

    @property
    def server(self) -> str:
        return f"https://{hostnet.GATEWAY}:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @classmethod
    def start(cls, root: Path) -> KubeCluster:
        cluster = cls(root)
        try:
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _spawn(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, self.log_dir / f"{name}.log").start()
        self.processes.append(process)
        return process

    def _start(self) -> None:
        self.bridge_claim = hostnet.claim_bridge()
        pki = Pki.create(self.root / "pki", (hostnet.GATEWAY, hostnet.FIRST_SERVICE_IP))
        etcd_port, etcd_peer = free_port(), free_port()
        etcd = self._spawn(
            "etcd",
            [
                binary("etcd"),
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",  # a throwaway test store: durability is not what is tested
                "--log-level=warn",
            ],
        )
        etcd.wait_until(http_ok(f"http://127.0.0.1:{etcd_port}/health"), timeout=30, what="healthy")

        self.api_port = free_port()
        apiserver = self._spawn(
            "kube-apiserver",
            [
                binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={hostnet.GATEWAY}",
                f"--advertise-address={hostnet.GATEWAY}",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                # The default (lease) reconciler: endpoints/kubernetes points at the gateway, so
                # in-cluster clients reach this server through 10.96.0.1:443 and kube-proxy.
                # The kubelet listens on loopback; its node name resolves there (never its InternalIP).
                "--kubelet-preferred-address-types=Hostname",
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                f"--cert-dir={self.root / 'apiserver-certs'}",
                "--v=1",
            ],
        )
        if self.bridge_claim is not None:  # the bridge is needed as long as this server lives
            hostnet.hold_claim(self.bridge_claim, apiserver.pid)
        admin = {"client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)}
        self.kubeconfig.write_text(kubeconfig_yaml(self.server, pki.ca_cert, admin))
        apiserver.wait_until(self._healthy, timeout=90, what="healthy")

        self._spawn(
            "kube-controller-manager",
            [
                binary("kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--controllers=*",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=false",
                f"--cert-dir={self.root / 'kcm-certs'}",
                "--concurrent-gc-syncs=5",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                binary("kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
            ],
        )
        kwok = binary("kwok")
        self._spawn(
            "kwok",
            [
                kwok,
                f"--config={Path(kwok).parent.parent / 'kwok-stages.yaml'}",
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
                "--cidr=10.244.0.0/16",
            ],
        )
        for name in FAKE_NODES:
            self.apply(fake_node(name))
        self.wait_for(self._default_service_account, timeout=60, what="the default ServiceAccount")
        self.wait_for(self._nodes_ready, timeout=60, what="kwok's nodes Ready")

    def _healthy(self) -> bool:
        response = requests.get(
            f"{self.server}/readyz",
            verify=str(self.pki.ca_cert),
            timeout=3,
            cert=(str(self.pki.admin_cert), str(self.pki.admin_key)),
        )
        return response.status_code == 200

    def _default_service_account(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0

    def _nodes_ready(self) -> bool:
        nodes = self.get_json("nodes")["items"]
        ready = [
            n
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) == len(FAKE_NODES)

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "a condition") -> None:
        """Poll until `predicate()` is truthy; fail naming what never happened, with the logs' tails."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            for process in self.processes:
                if not process.alive():
                    raise RigError(
                        f"{process.name} died while waiting for {what}:\n{tail(process.log_path, 40)}"
                    )
            try:
                if predicate():
                    return
            except Exception as error:
                last_error = error
            time.sleep(0.2)
        raise RigError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig or self.kubeconfig))
        result = subprocess.run(
            [binary("kubectl"), *args],
            capture_output=True,
            text=True,
            env=env,
            input=input,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise RigError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def service_account_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        """A kubeconfig that acts as a ServiceAccount (a bound token), with the CA embedded.

        Readable by anyone (mode 644) so a container's non-root user can use it: it holds no admin key.
        """
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
        ca = base64.b64encode(self.pki.ca_cert.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "rig", "cluster": {"server": self.server, "certificate-authority-data": ca}}
            ],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [
                {"name": account, "context": {"cluster": "rig", "user": account, "namespace": namespace}}
            ],
            "current-context": account,
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o644)
        return path

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def stop(self) -> None:
        """Stop every component, newest first, so nothing writes to a store that is gone."""
        for process in reversed(self.processes):
            process.stop()
        hostnet.release_bridge(self.bridge_claim)
        self.bridge_claim = None
