"""Fixtures for the real parts: an NSQ cluster, a Kubernetes control plane and a Docker engine.

Every log a fixture's processes write is attached to the report of a failing test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.reliability.support import Row, git_commit, mode, write_row
from tests.rig import docker
from tests.rig.kube import KubeCluster
from tests.rig.node import RealNode
from tests.rig.nsq import NsqCluster
from tests.rig.procs import tail
from tests.rig.reporting import LOG_PATHS, attach_logs
from tests.rig.tools import PROJECT_ROOT
from tests.rig.workers import WorkerFactory

OUTCOME = pytest.StashKey[tuple[str, str]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    report = yield
    when, failed = getattr(report, "when", ""), getattr(report, "failed", False)
    if when == "call" or (when == "setup" and failed):  # what a RELIABILITY.md row reports
        crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
        item.stash[OUTCOME] = (
            getattr(report, "outcome", ""),
            str(getattr(crash, "message", "")) if failed else "",
        )
    if failed:
        fixtures = getattr(item, "funcargs", {}).values()
        paths = item.stash.get(LOG_PATHS, []) + [f.log_dir for f in fixtures if hasattr(f, "log_dir")]
        for path in paths:
            for log in sorted(path.glob("*.log")) if path.is_dir() else [path]:
                report.sections.append((f"rig log {log.name}", tail(log, 60)))  # type: ignore[attr-defined]
    return report


@pytest.fixture
def nsq_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NsqCluster]:
    """One nsqlookupd and two nsqd on loopback; `indirect` parametrisation may ask for other counts."""
    counts = getattr(request, "param", {})
    cluster = NsqCluster.start(
        tmp_path / "nsq", nsqd_count=counts.get("nsqd", 2), lookupd_count=counts.get("lookupd", 1)
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """One control plane for the whole session; tests keep apart by namespace (`kube_namespace`)."""
    cluster = KubeCluster.start(tmp_path_factory.mktemp("kube"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the session's control plane, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_cluster.kubectl("create", "namespace", name)
    attach_logs(request, [kube_cluster.log_dir])
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Docker engine; yields the Python base image for the Dockerfile's PYTHON_BASE."""
    work = tmp_path_factory.mktemp("docker")
    started = docker.ensure_engine(work)
    try:
        yield docker.ensure_base_image(work)
    finally:
        if started is not None:
            started.stop(timeout=30)


@pytest.fixture
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Real worker processes for one test (see tests/rig/workers.py), all stopped afterwards."""
    factory = WorkerFactory(request, tmp_path / "workers")
    yield factory
    factory.stop_all()


@dataclass(frozen=True)
class Images:
    """The project's two images, built once per session from its Dockerfile on the rig's engine."""

    worker: str
    operator: str


USER_IMAGE = "nsq-operator/example-archiver:test"  # examples/worker-image on top of the worker image


@pytest.fixture(scope="session")
def images(docker_engine: str) -> Images:
    return Images(
        worker=docker.build_image("worker", "nsq-operator/worker:test", docker_engine, PROJECT_ROOT),
        operator=docker.build_image("operator", "nsq-operator/operator:test", docker_engine, PROJECT_ROOT),
    )


# Module-scoped: between modules the node is stopped, so `make demo-kube` (run by a test in a
# subprocess) can take the machine's one real node. No fallback to kwok: when the node cannot start,
# every test that needs it fails with the reason (the failing component's log tail).
@pytest.fixture(scope="module")
def real_node(kube_cluster: KubeCluster, docker_engine: str) -> Iterator[RealNode]:
    node = RealNode.start(kube_cluster.kubeconfig, kube_cluster.pki.ca_cert)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def node_images(real_node: RealNode, images: Images) -> Images:
    """The worker, operator and example user images, in the real node's containerd."""
    docker.docker(
        "build", "--build-arg", f"WORKER_IMAGE={images.worker}", "-t", USER_IMAGE,
        str(PROJECT_ROOT / "examples" / "worker-image"), timeout=600,
    )  # fmt: skip
    real_node.load_images(images.worker, images.operator, USER_IMAGE)
    return images


# -- RELIABILITY.md rows: any test may write one (tests/reliability/support.Row) ----------------------


@pytest.fixture
def row(request: pytest.FixtureRequest) -> Iterator[Row]:
    """The scenario's line in RELIABILITY.md, written (with the test's outcome) when the test ends."""
    started = time.monotonic()
    entry = Row()
    yield entry
    if not entry.scenario:
        return
    outcome, message = request.node.stash.get(OUTCOME, ("failed", "did not finish"))
    first_line = message.splitlines()[0] if message else ""
    entry.outcome = outcome if outcome == "passed" else f"{outcome}: {first_line[:300]}"
    entry.seconds = round(time.monotonic() - started, 1)
    entry.mode = mode()
    entry.nodeid = request.node.nodeid
    entry.finished_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    entry.commit = git_commit()
    write_row(entry)
