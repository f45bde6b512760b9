"""The real node leaves the machine as it found it, also when its run crashed.

A node is started, a pod runs on it, then every program of the node is SIGKILLed (as when the test
run dies): the next `cleanup_host()` must leave no process, mount, cgroup, KUBE-* chain, nfacct
object or sysctl change behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.e2e.node.support import container_pids, wait_ready_pods
from tests.rig import hostnet
from tests.rig.kube import KubeCluster
from tests.rig.node import CGROUP_ROOT, NODE_ROOT, SYSCTLS, RealNode, _read_sysctl, cleanup_host, placement


def kube_chains() -> list[str]:
    found = []
    for tool in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
        found += [line for line in out.splitlines() if line.startswith(":KUBE-")]
    return found


def test_a_crashed_node_is_cleaned_up_completely(kube_cluster: KubeCluster, docker_engine: str) -> None:
    before = {name: _read_sysctl(name) for name in SYSCTLS}
    node = RealNode.start(kube_cluster.kubeconfig, kube_cluster.pki.ca_cert)
    try:
        namespace = "crash-rig"
        kube_cluster.kubectl("create", "namespace", namespace)
        pod = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "sleeper", "labels": {"nsqoperator.dev/consumer": "sleeper"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"nsqoperator.dev/consumer": "sleeper"}},
                     "template": {"metadata": {"labels": {"nsqoperator.dev/consumer": "sleeper"}},
                                  "spec": {**placement(), "containers": [
                                      {"name": "worker", "image": "nsq-operator-rig/pause:1",
                                       "imagePullPolicy": "Never"}]}}},
        }  # fmt: skip
        kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
        [running] = wait_ready_pods(kube_cluster, namespace, "sleeper", count=1)
        pids = container_pids(node, running)
        assert pids
        assert _read_sysctl("kernel.panic_on_oops") is not None
        assert kube_chains(), "kubelet and kube-proxy made their chains"
        # The crash: every program of the node dies at once; the pod's processes live on.
        for process in node.processes:
            os.kill(process.pid, signal.SIGKILL)
        for process in node.processes:
            assert process.popen is not None
            process.popen.wait(10)
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    finally:
        if node._lock is not None:
            node._lock.close()
            node._lock = None
    cleanup_host()  # what the next run does first
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "the pod's processes are gone"
    assert kube_chains() == []
    assert not [h.name for h in CGROUP_ROOT.iterdir() if (h / "kubepods").exists()]
    assert str(NODE_ROOT) not in Path("/proc/self/mountinfo").read_text()
    assert not NODE_ROOT.exists()
    assert {name: _read_sysctl(name) for name in SYSCTLS} == before
    assert hostnet.confined(), "the bridge's DROP rules stay while the control plane runs"
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(NODE_ROOT) in _cmdline(p)]
    assert leftovers == []
    # The Node object stays (NotReady); the next node registers again under the same name.
    kube_cluster.kubectl("delete", "namespace", "crash-rig", "--wait=false", check=False)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
