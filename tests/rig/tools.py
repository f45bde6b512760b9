"""Where the Go-built binaries live: tools/build.sh builds them once into a cache outside the work tree."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from tests.rig.procs import RigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Which tools/build.sh group builds each binary, so a test that needs nsqd never waits for Kubernetes.
GROUP_OF = {
    **dict.fromkeys(["nsqd", "nsqlookupd", "to_nsq", "nsq_tail", "bench_reader", "bench_writer"], "nsq"),
    **dict.fromkeys(
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
            "kubelet",
            "kube-proxy",
        ],
        "kube",
    ),
    "kwok": "kwok",
    "helm": "helm",
    "pause": "pause",
}


@functools.cache
def build(group: str) -> Path:
    """Build (or, with a warm cache, find) one group of pinned binaries and return their directory."""
    result = subprocess.run(
        ["bash", str(PROJECT_ROOT / "tools" / "build.sh"), group], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RigError(f"tools/build.sh {group} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def binary(name: str) -> str:
    """The path of one pinned binary, building its group first when the cache lacks it."""
    path = build(GROUP_OF[name]) / name
    if not path.is_file():
        raise RigError(f"{path} is missing after tools/build.sh; delete the cache and rerun")
    return str(path)
