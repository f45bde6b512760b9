"""The rig's bridge claims: a control plane that is still running keeps the bridge; a crashed one
(its pid gone, or a zombie) holds nothing and its claim is cleared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.rig import hostnet


def test_only_claims_of_running_processes_count(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "mine").write_text(str(os.getpid()))
        (tmp_path / "crashed").write_text(str(finished.pid))
        (tmp_path / "garbled").write_text("not a pid")
        other = tmp_path / "other"
        other.write_text(str(os.getpid()))
        hostnet.hold_claim(other, sleeper.pid)  # the claim follows its API server, not its maker
        assert [p.name for p in hostnet.live_claims(tmp_path)] == ["mine", "other"]
        assert not (tmp_path / "crashed").exists()  # cleared on the way
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [p.name for p in hostnet.live_claims(tmp_path)] == ["mine"]


def test_a_zombie_holds_nothing(tmp_path: Path) -> None:
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):  # until it has exited but is not reaped
            if Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            os.sched_yield()
            subprocess.run(["sleep", "0.01"], check=True)
        (tmp_path / "z").write_text(str(zombie.pid))
        assert hostnet.live_claims(tmp_path) == []
    finally:
        zombie.wait()


def test_no_claims_directory_means_no_claims(tmp_path: Path) -> None:
    assert hostnet.live_claims(tmp_path / "absent") == []
