"""The worker image on the real Docker engine against a real nsqd: help, consume, drain on docker stop."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import Images
from tests.rig.docker import docker
from tests.rig.nsq import NsqCluster
from tests.rig.procs import free_port
from tests.rig.tools import PROJECT_ROOT

HARDENED = ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--tmpfs=/tmp"]


def test_help_documents_every_setting(images: Images) -> None:
    out = docker("run", "--rm", images.worker, "--help").stdout
    for variable in ("NSQ_TOPIC", "NSQ_CHANNEL", "NSQD_TCP_ADDRESS", "NSQ_MAX_IN_FLIGHT", "NSQ_HEALTH_PORT"):
        assert variable in out


def test_image_runs_as_non_root_without_build_tools(images: Images) -> None:
    config = json.loads(docker("image", "inspect", images.worker).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    probe = "import shutil, sys; print([t for t in ('gcc', 'uv', 'pip3', 'apt-get') if shutil.which(t)])"
    assert docker("run", "--rm", "--entrypoint", "python3", images.worker, "-c", probe).stdout.strip() in (
        "[]",
        "['apt-get']",  # the Debian base keeps apt; nothing of ours adds a tool
    )


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"nsq-worker-{uuid.uuid4().hex[:8]}"
    yield name
    docker("rm", "-f", name, check=False)


def test_worker_container_consumes_and_drains_on_docker_stop(
    images: Images, nsq_cluster: NsqCluster, container_name: str
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("images", "e2e")
    health_port = free_port()
    docker(
        "run",
        "-d",
        "--name",
        container_name,
        "--network=host",
        *HARDENED,
        "-e",
        "NSQ_TOPIC=images",
        "-e",
        "NSQ_CHANNEL=e2e",
        "-e",
        f"NSQD_TCP_ADDRESS={nsqd.tcp_address}",
        "-e",
        f"NSQ_HEALTH_PORT={health_port}",
        "-e",
        "NSQ_HEALTH_HOST=127.0.0.1",
        images.worker,
        "nsq_worker.examples:LogWorker",
    )
    published = nsqd.publish("images", [f"message {i}".encode() for i in range(200)])

    def consumed() -> bool:
        stats = nsqd.channel_stats("images", "e2e")
        return (
            stats.get("message_count") == published and stats["depth"] == 0 and stats["in_flight_count"] == 0
        )

    deadline = time.monotonic() + 60
    while not consumed():
        assert time.monotonic() < deadline, docker("logs", container_name).stderr[-3000:]
        time.sleep(0.2)
    assert requests.get(f"http://127.0.0.1:{health_port}/readyz", timeout=5).status_code == 200
    metrics = requests.get(f"http://127.0.0.1:{health_port}/metrics", timeout=5).text
    finished = re.search(r"^nsq_worker_messages_finished_total\{[^}]*\} (\S+)$", metrics, re.MULTILINE)
    assert finished is not None, metrics
    assert float(finished.group(1)) == published

    docker("stop", "--time=20", container_name)
    state = json.loads(docker("inspect", container_name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, docker("logs", container_name).stderr[-3000:]
    assert nsqd.channel_stats("images", "e2e")["client_count"] == 0


def test_a_user_image_built_from_the_worker_image_runs_its_handler(
    images: Images, nsq_cluster: NsqCluster, container_name: str
) -> None:
    example = PROJECT_ROOT / "examples" / "worker-image"
    tag = "nsq-operator/example-archiver:test"
    docker("build", "--build-arg", f"WORKER_IMAGE={images.worker}", "-t", tag, str(example))
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("events", "archive")
    published = nsqd.publish("events", [json.dumps({"kind": "signup", "n": i}).encode() for i in range(50)])
    docker(
        "run", "-d", "--name", container_name, "--network=host", *HARDENED,
        "-e", "NSQ_TOPIC=events", "-e", "NSQ_CHANNEL=archive", "-e", f"NSQD_TCP_ADDRESS={nsqd.tcp_address}",
        "-e", f"NSQ_HEALTH_PORT={free_port()}", "-e", "NSQ_HEALTH_HOST=127.0.0.1", tag,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while nsqd.channel_stats("events", "archive").get("message_count") != published or (
        nsqd.channel_stats("events", "archive")["depth"]
        or nsqd.channel_stats("events", "archive")["in_flight_count"]
    ):
        assert time.monotonic() < deadline, docker("logs", container_name).stderr[-3000:]
        time.sleep(0.2)
    logs = docker("logs", container_name)
    assert (logs.stdout + logs.stderr).count("archived") == published
    docker("stop", "--time=20", container_name)
    assert json.loads(docker("inspect", container_name).stdout)[0]["State"]["ExitCode"] == 0
