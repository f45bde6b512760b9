"""Local mode against the real NSQ rig: one pinned worker process per nsqd, supervised, tied to its parent."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from tests.rig.nsq import NsqCluster
from tests.rig.procs import Process, free_port
from tests.rig.reporting import attach_logs
from tests.rig.waiting import wait_for
from tests.rig.workers import RECORDING_WORKER

NSQ_OPERATOR = Path(sys.executable).parent / "nsq-operator"
TOPIC, CHANNEL = "local", "mode"


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid`, each with the nsqd address its environment names."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != pid or stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            env = dict(
                item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item
            )
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        found[int(entry.name)] = env.get("NSQD_TCP_ADDRESS", "")
    return found


def allowed_cpus(pid: int) -> set[int]:
    return os.sched_getaffinity(pid)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class LocalRun:
    process: Process
    record_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> dict[int, str]:
        return children(self.pid)

    def log(self) -> str:
        return self.process.log_path.read_text()

    def handled(self) -> list[str]:
        if not self.record_path.exists():
            return []
        lines = [json.loads(line) for line in self.record_path.read_text().splitlines() if line.strip()]
        return [line["body"] for line in lines if line["event"] == "done"]


class StartLocal(Protocol):
    def __call__(self, *extra: str, worker: list[str] | None = None) -> LocalRun: ...


@pytest.fixture
def start_local(
    request: pytest.FixtureRequest, nsq_cluster: NsqCluster, tmp_path: Path
) -> Iterator[StartLocal]:
    runs: list[LocalRun] = []
    script = RECORDING_WORKER

    def start(*extra: str, worker: list[str] | None = None) -> LocalRun:
        record = tmp_path / f"records-{len(runs)}.jsonl"
        argv = [
            str(NSQ_OPERATOR), "local", "--lookupd-http-address", nsq_cluster.lookupd_http_urls[0],
            "--topic", TOPIC, "--channel", CHANNEL, "--poll-interval", "0.5", "--removal-grace", "2",
            "--drain-timeout", "10", "--view", "plain", "--log-dir", str(tmp_path / "workers"), *extra,
            "--", *(worker or [sys.executable, str(script)]),
        ]  # fmt: skip
        env = {"RECORD_FILE": str(record), "NSQ_HEARTBEAT_INTERVAL": "1", "PYTHONUNBUFFERED": "1"}
        process = Process("nsq-operator-local", argv, tmp_path / "local.log", env=env).start()
        attach_logs(request, [tmp_path / "local.log", tmp_path / "workers"])
        run = LocalRun(process, record)
        runs.append(run)
        return run

    yield start
    for run in runs:
        pids = list(run.workers())
        run.process.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def with_topic(cluster: NsqCluster, count: int | None = None) -> list[str]:
    for nsqd in cluster.nsqds[:count]:
        nsqd.create_topic(TOPIC, CHANNEL)
    return [nsqd.tcp_address for nsqd in cluster.nsqds[:count]]


def test_one_pinned_worker_per_nsqd_follows_nsqds_joining_and_leaving(
    nsq_cluster: NsqCluster, start_local: StartLocal
) -> None:
    addresses = with_topic(nsq_cluster)
    run = start_local()
    # (a child between fork and exec still has the controller's environment: wait for the workers')
    wait_for(lambda: sorted(run.workers().values()) == sorted(addresses), what="a worker per nsqd")
    workers = run.workers()
    cores = [allowed_cpus(pid) for pid in workers]
    assert all(len(allowed) == 1 for allowed in cores), cores
    assert len(set().union(*cores)) == min(2, len(os.sched_getaffinity(0))), (
        "workers are spread over the cores"
    )
    assert len(allowed_cpus(run.pid)) == len(os.sched_getaffinity(0)), "the controller itself stays unpinned"

    joined = nsq_cluster.add_nsqd()
    joined.create_topic(TOPIC, CHANNEL)
    wait_for(lambda: joined.tcp_address in run.workers().values(), what="a worker for the new nsqd")
    assert len(run.workers()) == 3

    leaving = nsq_cluster.nsqds[0]
    leaving.stop()
    wait_for(lambda: leaving.tcp_address not in run.workers().values(), timeout=20, what="the worker to go")
    assert sorted(run.workers().values()) == sorted(n.tcp_address for n in nsq_cluster.nsqds[1:])
    assert "is no longer listed by lookupd" in run.log()


def test_a_worker_killed_with_sigkill_is_restarted(nsq_cluster: NsqCluster, start_local: StartLocal) -> None:
    with_topic(nsq_cluster, 1)
    run = start_local()
    ((victim, address),) = wait_for(
        lambda: run.workers() if len(run.workers()) == 1 else None, what="the worker"
    ).items()
    os.kill(victim, signal.SIGKILL)
    replacement = wait_for(
        lambda: [pid for pid, a in run.workers().items() if a == address and pid != victim], what="a restart"
    )
    assert len(replacement) == 1
    assert "killed by signal 9" in run.log()


def test_killing_the_controller_with_sigkill_leaves_no_worker(
    nsq_cluster: NsqCluster, start_local: StartLocal
) -> None:
    with_topic(nsq_cluster)
    run = start_local()
    workers = wait_for(lambda: run.workers() if len(run.workers()) == 2 else None, what="two workers")
    os.kill(run.pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=15, what="the orphans to exit")


def test_sigterm_drains_every_worker_and_loses_no_message(
    nsq_cluster: NsqCluster, start_local: StartLocal
) -> None:
    with_topic(nsq_cluster)
    bodies = [json.dumps({"n": i, "sleep": 0.02}) for i in range(400)]
    for index, nsqd in enumerate(nsq_cluster.nsqds):
        nsqd.publish(TOPIC, [b.encode() for b in bodies[index::2]])
    run = start_local()
    wait_for(lambda: len(run.handled()) >= 50, what="some messages handled")
    assert run.process.popen is not None
    run.process.popen.send_signal(signal.SIGTERM)
    assert run.process.popen.wait(30) == 0
    assert not run.workers()
    left = 0
    for nsqd in nsq_cluster.nsqds:
        stats = nsqd.channel_stats(TOPIC, CHANNEL)
        assert stats["in_flight_count"] == 0
        assert stats["timeout_count"] == 0
        left += stats["depth"] + stats["deferred_count"]
    handled = set(run.handled())
    assert len(handled) + left == len(bodies), (len(handled), left)


def test_a_crash_looping_worker_is_reported(nsq_cluster: NsqCluster, start_local: StartLocal) -> None:
    with_topic(nsq_cluster, 1)
    run = start_local("--restart-cap", "0.2", worker=[sys.executable, "-c", "raise SystemExit(3)"])
    wait_for(lambda: "is crash-looping" in run.log(), what="the crash loop to be reported")
    assert "exit 3" in run.log()


def test_lookupd_credentials_are_used_and_never_shown(
    nsq_cluster: NsqCluster, start_local: StartLocal
) -> None:
    addresses = with_topic(nsq_cluster)
    real = nsq_cluster.lookupd_http_urls[0]
    closed = free_port()
    run = start_local(
        "--lookupd-http-address", real.replace("http://", "http://planted-user:PLANTED-SECRET-123@"),
        "--lookupd-http-address", f"http://u:PLANTED-SECRET-456@127.0.0.1:{closed}",
    )  # fmt: skip
    # (a child between fork and exec still has the controller's environment: wait for the workers')
    wait_for(lambda: sorted(run.workers().values()) == sorted(addresses), what="a worker per nsqd")
    wait_for(lambda: "lookupd unreachable or unusable" in run.log(), what="the failing lookupd reported")
    log = run.log()  # the plain view's lines and the controller's log, both
    assert f"lookupd unreachable or unusable: http://***@127.0.0.1:{closed}: ConnectionError" in log
    assert f"via {real}, {real.replace('http://', 'http://***@')}, http://***@127.0.0.1:{closed}" in log
    assert "PLANTED-SECRET" not in log
