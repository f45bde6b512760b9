"""Images built once per session from the project's Dockerfile on the rig's Docker engine."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.rig import docker
from tests.rig.tools import PROJECT_ROOT


@dataclass(frozen=True)
class Images:
    worker: str
    operator: str


@pytest.fixture(scope="session")
def images(docker_engine: str) -> Images:
    return Images(
        worker=docker.build_image("worker", "nsq-operator/worker:test", docker_engine, PROJECT_ROOT),
        operator=docker.build_image("operator", "nsq-operator/operator:test", docker_engine, PROJECT_ROOT),
    )
