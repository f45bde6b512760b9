"""Run the pinned helm against the rig, with a HOME of its own so nothing leaks from the user's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.rig.procs import RigError
from tests.rig.tools import PROJECT_ROOT, binary

CHART = PROJECT_ROOT / "deploy" / "helm" / "nsq-operator"
KUBE_VERSION = "1.36.3"  # for `helm template`, which otherwise assumes an old cluster


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    home = PROJECT_ROOT / ".rig" / "helm-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run(
        [binary("helm"), *args], capture_output=True, text=True, timeout=300, check=False, env=env
    )
    if check and result.returncode != 0:
        raise RigError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result
