"""The Docker part of the rig is real: the engine builds an image on the rig's Python base and runs it."""

from __future__ import annotations

from pathlib import Path

from tests.rig.docker import docker


def test_an_image_built_by_the_engine_runs(docker_engine: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        f'FROM {docker_engine}\nRUN python3 -c \'print(6 * 7)\' > /answer\nCMD ["cat", "/answer"]\n'
    )
    tag = "nsq-operator-rig/smoke:test"
    docker("build", "--network", "host", "-t", tag, str(tmp_path))
    try:
        assert docker("run", "--rm", tag).stdout.strip() == "42"
    finally:
        docker("rmi", "-f", tag, check=False)
