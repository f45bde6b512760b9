"""The demos newcomers run first, in their short mode: they must show the job and end cleanly."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.rig.tools import PROJECT_ROOT


def test_local_demo_shows_workers_following_the_nsqds_and_ends_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo", "local", "--short"], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert len(re.findall(r"worker \S+ for nsqd \S+ started", out)) == 4, out[-4000:]
    assert re.search(r"stopping: nsqd no longer listed by lookupd", out), out[-4000:]
    assert "4 workers" in out
    assert re.search(r"[1-9][0-9]* msg/s", out), "messages flowed"
    assert out.count("stopped (exit 0)") == 4
    assert "Local mode exited with status 0" in out


def test_kube_demo_shows_deployments_following_the_nsqds_and_ends_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo", "kube", "--short"], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert re.search(r"demo\s+demo\s+workers\s+3\s+3\s+3\s+AllWorkersReady", out), out[-4000:]
    assert re.search(r"demo\s+demo\s+workers\s+4\s+", out), out[-4000:]
    assert out.count("DeploymentCreated") == 4
    assert "DeploymentDeleted" in out
    assert re.search(r"finished\s+[1-9][0-9]*\s+restarts 1", out), "a killed pod restarted and consumed"
    assert "Done:" in out
