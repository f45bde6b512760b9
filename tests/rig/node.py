"""A real node for the rig: a private containerd, a kubelet and kube-proxy, running real pods.

kwok's nodes start no containers; this one does, so restarts, probes, drains, CPU quota, mounted
Secrets and the chart's own operator pod can be seen. The facts it rests on (the settings that
matter and why) are in tools/README.md, "The real node".

Everything lives under one fixed directory (NODE_ROOT) so that a run that crashed can be cleaned up
by the next one: `cleanup_host()` kills what is left, unmounts, removes the kubelet's cgroups, the
KUBE-* iptables chains, kube-proxy's nfacct objects and the kubelet's files under /var, and puts the
sysctls the kubelet changed back to what they were. It runs before a node starts and after it stops.
Only one real node may run on a machine at a time; a lock file says which process has it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

from tests.rig import docker, hostnet
from tests.rig.procs import Process, RigError, free_port, tail
from tests.rig.tools import binary

NODE_ROOT = Path("/var/lib/nsq-operator-rig")
RUN_DIR = Path("/run")
NODE_NAME = os.uname().nodename  # it resolves to loopback here, so `kubectl logs` reaches the kubelet
TAINT_KEY = "nsq-operator.dev/real-node"
NODE_LABEL = "nsq-operator.dev/node"
SANDBOX_IMAGE = "nsq-operator-rig/pause:1"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# What the kubelet sets on start (its "kernel defaults") and kube-proxy may touch; restored on stop.
SYSCTLS = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
)
# Made on the host by the kubelet or libcni whatever their configuration says; removed when the rig
# made them (recorded in host-state.json before the first start).
HOST_PATHS = (
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/var/lib/kubelet"),
    Path("/var/lib/cni"),
    Path("/etc/cni"),
    Path("/opt/cni"),
)


def toleration() -> dict[str, str]:
    """What a pod needs to run on the real node (kept off it by a taint, so kwok tests stay on kwok)."""
    return {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


def placement() -> dict[str, Any]:
    """The pod-spec fields (nodeSelector, tolerations) that put a pod on the real node."""
    return {"nodeSelector": {NODE_LABEL: "real"}, "tolerations": [toleration()]}


@dataclass
class RealNode:
    """The running node; `name` is the Node object's name."""

    kubeconfig: Path
    ca_cert: Path
    processes: list[Process] = field(default_factory=list)
    name: str = NODE_NAME
    _lock: IO[str] | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        return NODE_ROOT

    @property
    def log_dir(self) -> Path:
        return NODE_ROOT / "logs"

    @property
    def containerd_socket(self) -> Path:
        return NODE_ROOT / "containerd" / "containerd.sock"

    @classmethod
    def start(cls, kubeconfig: Path, ca_cert: Path) -> RealNode:
        node = cls(kubeconfig, ca_cert)
        node._lock = _take_lock()
        try:
            cleanup_host()
            node._start()
        except BaseException:
            node.stop()
            raise
        return node

    # ---- starting ----

    def _spawn(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, self.log_dir / f"{name}.log").start()
        self.processes.append(process)
        _pids_file().write_text(json.dumps([p.pid for p in self.processes]))
        return process

    def _start(self) -> None:
        _require_packages()
        for sub in ("logs", "containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "runc"):
            (NODE_ROOT / sub).mkdir(parents=True, exist_ok=True)
        _record_host_state()
        hostnet.bridge_up()
        self._write_cni_config()
        containerd = self._spawn(
            "containerd", ["/usr/bin/containerd", f"--config={self._write_containerd_config()}"]
        )
        containerd.wait_until(self.containerd_socket.exists, timeout=30, what="listening")
        containerd.wait_until(self._cri_answers, timeout=30, what="serving CRI")
        self._load_sandbox_image()
        kubelet = self._spawn(
            "kubelet",
            [
                binary("kubelet"),
                f"--config={self._write_kubelet_config()}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={NODE_ROOT / 'kubelet'}",
                f"--cert-dir={NODE_ROOT / 'kubelet' / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-labels={NODE_LABEL}=real",
                "--v=1",
            ],
        )
        kubelet.wait_until(self._node_ready, timeout=90, what="a Ready node")
        proxy = self._spawn(
            "kube-proxy", [binary("kube-proxy"), f"--config={self._write_proxy_config()}", "--v=1"]
        )
        proxy.wait_until(self._proxy_synced, timeout=60, what="serving the kubernetes Service")
        # dockerd or kube-proxy may have put rules above the rig's DROPs: put them back on top.
        hostnet.confine()

    def _write_containerd_config(self) -> Path:
        c = NODE_ROOT / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{c / "containerd.ttrpc.sock"}"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"
[{cri}]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "/usr/sbin/runc"
  Root = "{NODE_ROOT / "runc"}"
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{NODE_ROOT / "cni" / "net.d"}"
"""
        path = c / "config.toml"
        path.write_text(config)
        return path

    def _write_cni_config(self) -> None:
        config = {
            "cniVersion": "1.0.0",
            "name": "nsq-operator-rig",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": hostnet.BRIDGE,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": False,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(NODE_ROOT / "cni" / "ipam"),
                        "ranges": [[{"subnet": hostnet.SUBNET, "gateway": hostnet.GATEWAY}]],
                        # The service range and nothing else: pods reach the host and Services only.
                        "routes": [{"dst": hostnet.SERVICE_RANGE, "gw": hostnet.GATEWAY}],
                    },
                },
                {"type": "loopback"},
            ],
        }
        (NODE_ROOT / "cni" / "net.d" / "10-rig.conflist").write_text(json.dumps(config, indent=2))

    def _write_kubelet_config(self) -> Path:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": free_port(),
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "readOnlyPort": 0,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "clusterDNS": [],
            "resolvConf": "",
            "podLogsDir": str(NODE_ROOT / "pod-logs"),
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            "serializeImagePulls": False,
            "maxPods": 40,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "60s",
            "shutdownGracePeriod": "0s",
        }
        return _write_json(NODE_ROOT / "kubelet-config.json", config)

    def _write_proxy_config(self) -> Path:
        self._proxy_healthz = free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": hostnet.SUBNET,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{self._proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "nodePortAddresses": [f"{hostnet.GATEWAY}/32"],
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
            # Zero means "leave the host's conntrack settings alone".
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
        }
        return _write_json(NODE_ROOT / "kube-proxy-config.json", config)

    def _load_sandbox_image(self) -> None:
        if not self._has_image(SANDBOX_IMAGE):
            context = NODE_ROOT / "pause-image"
            context.mkdir(exist_ok=True)
            shutil.copy2(binary("pause"), context / "pause")
            (context / "Dockerfile").write_text(
                'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
            )
            docker.docker("build", "-t", SANDBOX_IMAGE, str(context), timeout=300)
        self.load_images(SANDBOX_IMAGE)

    # ---- using ----

    def ctr(self, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["/usr/bin/ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise RigError(f"ctr {' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result

    def _has_image(self, image: str) -> bool:
        return docker.docker("image", "inspect", image, check=False).returncode == 0

    def load_images(self, *images: str) -> None:
        """Copy images from the rig's docker engine into this node's containerd (no registry asked)."""
        for image in images:
            archive = NODE_ROOT / "image.tar"
            docker.docker("save", "-o", str(archive), image, timeout=600)
            try:
                self.ctr("images", "import", "--no-unpack=false", str(archive))
            finally:
                archive.unlink(missing_ok=True)

    def _cri_answers(self) -> bool:
        return self.ctr("version", check=False).returncode == 0

    def _kubectl_json(self, *args: str) -> Any:
        result = subprocess.run(
            [binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args, "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RigError(result.stderr)
        return json.loads(result.stdout)

    def _node_ready(self) -> bool:
        node = self._kubectl_json("get", "node", self.name)
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", [])
        )

    def _proxy_synced(self) -> bool:
        response = requests.get(f"http://127.0.0.1:{self._proxy_healthz}/healthz", timeout=2)
        rules = subprocess.run(
            ["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], capture_output=True, text=True, check=False
        ).stdout
        return response.status_code == 200 and hostnet.FIRST_SERVICE_IP in rules

    def container_cgroup(self, container_id: str, controller: str = "cpu") -> Path:
        """The host directory of a container's cgroup in one v1 hierarchy (found by its id)."""
        matches = list((CGROUP_ROOT / controller / "kubepods").rglob(container_id))
        if not matches:
            raise RigError(f"no {controller} cgroup for container {container_id} under kubepods")
        return matches[0]

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.alive():
                raise RigError(f"{process.name} of the real node died:\n{tail(process.log_path, 40)}")

    # ---- stopping ----

    def stop(self) -> None:
        """Stop every pod's containers, then the node's programs, then undo what they changed."""
        try:
            _kill_pod_processes()
            for process in reversed(self.processes):
                process.stop(timeout=15)
            cleanup_host()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None


# ---- host state: record, clean, restore ----


def _write_json(path: Path, config: dict[str, Any]) -> Path:
    """A component's configuration file (JSON is valid YAML for the kubelet and kube-proxy)."""
    path.write_text(json.dumps(config, indent=2))
    return path


def _require_packages() -> None:
    needed = {
        "/usr/bin/containerd": "containerd",
        "/usr/bin/ctr": "containerd",
        "/usr/sbin/runc": "runc",
        "/usr/lib/cni/bridge": "containernetworking-plugins",
        "/usr/lib/cni/host-local": "containernetworking-plugins",
    }
    missing = sorted({pkg for path, pkg in needed.items() if not Path(path).exists()})
    if missing:
        raise RigError(f"the real node needs Debian's {', '.join(missing)}: run `make deps`")
    if os.geteuid() != 0:
        raise RigError("the real node (containerd, kubelet) must run as root")


def _take_lock() -> IO[str]:
    NODE_ROOT.mkdir(parents=True, exist_ok=True)
    lock = (RUN_DIR / "nsq-operator-rig.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RigError(
            "another real node runs on this machine (a test run or `make rig-up`); stop it first"
        ) from None
    return lock


def _host_state_file() -> Path:
    # Not in NODE_ROOT: cleanup removes it but must still know the old values. /run is gone after a
    # reboot, and so is every change recorded here.
    return RUN_DIR / "nsq-operator-rig.host-state.json"


def _pids_file() -> Path:
    return RUN_DIR / "nsq-operator-rig.pids.json"


def _read_sysctl(name: str) -> str | None:
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _record_host_state() -> None:
    """Before the first start only: the sysctls and which host paths existed, for the undo."""
    state_file = _host_state_file()
    if state_file.exists():
        return
    state = {
        "sysctls": {name: _read_sysctl(name) for name in SYSCTLS},
        "existing_paths": [str(p) for p in HOST_PATHS if p.exists()],
    }
    state_file.write_text(json.dumps(state, indent=2))


def _kill_pod_processes() -> int:
    """SIGKILL every process in a kubepods cgroup (every container and sandbox); returns how many."""
    pids: set[int] = set()
    for hierarchy in ("pids", "memory", "cpu", "freezer"):
        base = CGROUP_ROOT / hierarchy / "kubepods"
        if not base.is_dir():
            continue
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in procs.read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _kill_leftover_programs() -> None:
    """The containerd, kubelet, kube-proxy and shims of a run that crashed (matched by NODE_ROOT)."""
    marker = str(NODE_ROOT)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in cmdline and ("containerd" in cmdline or "kube" in cmdline):
                os.kill(int(proc.name), signal.SIGKILL)


def _unmount_under(root: Path) -> None:
    """Lazily unmount every mount at or under `root`, deepest first."""
    prefix = str(root)
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_cgroups() -> None:
    """rmdir the kubelet's kubepods tree in every v1 hierarchy, leaves first."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        base = hierarchy / "kubepods"
        if not base.is_dir():
            continue
        dirs = sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for directory in [*dirs, base]:
            with contextlib.suppress(OSError):
                directory.rmdir()


def cleanup_host() -> None:
    """Undo everything a real node changed on this machine; safe to run any number of times."""
    deadline = time.monotonic() + 10
    while _kill_pod_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    _kill_leftover_programs()
    time.sleep(0.2)
    _unmount_under(NODE_ROOT)
    _remove_cgroups()
    hostnet.remove_kube_chains()
    hostnet.remove_nfacct_objects()
    state_file = _host_state_file()
    if state_file.exists():
        state = json.loads(state_file.read_text())
        for name, value in state["sysctls"].items():
            current = _read_sysctl(name)
            if value is not None and current is not None and current != value:
                with contextlib.suppress(OSError):
                    (Path("/proc/sys") / name.replace(".", "/")).write_text(value)
        existing = set(state["existing_paths"])
        for path in HOST_PATHS:
            if str(path) not in existing and path.exists():
                _unmount_under(path)
                shutil.rmtree(path, ignore_errors=True)
        state_file.unlink()
    shutil.rmtree(NODE_ROOT, ignore_errors=True)
    _pids_file().unlink(missing_ok=True)
