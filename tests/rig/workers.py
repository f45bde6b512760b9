"""Helpers for the worker's integration tests (no tests here): real worker processes against real nsqd.

The pytest process never imports nsq_worker.worker (it monkey-patches gevent into the interpreter);
workers always run as subprocesses, and what their handlers did is read back from a JSON-lines file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.rig.nsq import Nsqd
from tests.rig.procs import Process, free_port
from tests.rig.reporting import attach_logs

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NSQ_WORKER_SCRIPT = PROJECT_ROOT / ".venv" / "bin" / "nsq-worker"

# The worker most tests run, as a script (gnsq_mp's `MyWorker.run()` form): what it does and records
# is in its docstring. The other test workers are next to it, run with `nsq-worker module:Class`.
RECORDING_WORKER = PROJECT_ROOT / "tests" / "worker_classes" / "recording.py"


@dataclass
class Worker:
    """One worker process and what its handlers recorded."""

    process: Process
    record_path: Path
    health_port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        assert self.process.popen is not None
        return self.process.popen

    @property
    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace") if self.process.log_path.exists() else ""

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.record_path.exists():
            return []
        lines = [json.loads(line) for line in self.record_path.read_text().splitlines() if line.strip()]
        return [line for line in lines if event is None or line["event"] == event]

    def get(self, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.health_port}{path}", headers=headers, timeout=2)

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.process.wait_until(lambda: self.get("/readyz").status_code == 200, timeout=timeout, what="ready")

    def metric(self, name: str) -> float:
        """The value of one unlabelled-by-state sample of /metrics."""
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + "{") and "state=" not in line and "le=" not in line:
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {name} in /metrics")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        self.process.stop()


class WorkerFactory:
    """Starts worker processes for one test and stops them all afterwards."""

    def __init__(self, request: pytest.FixtureRequest, root: Path) -> None:
        self.request = request
        self.root = root
        self.workers: list[Worker] = []
        root.mkdir(parents=True, exist_ok=True)
        self.script = RECORDING_WORKER

    def env_for(self, nsqd: Nsqd | None, topic: str, channel: str, **settings: object) -> dict[str, str]:
        env = {
            "NSQ_TOPIC": topic,
            "NSQ_CHANNEL": channel,
            "NSQ_HEARTBEAT_INTERVAL": "1",
            "NSQ_HEALTH_HOST": "127.0.0.1",  # the tests stay on loopback
            "NSQ_LOG_FORMAT": "json",
            "NSQ_LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(self.root)]),
        }
        if nsqd is not None:
            env["NSQD_TCP_ADDRESS"] = nsqd.tcp_address
        for key, value in settings.items():
            env[key if key.isupper() else f"NSQ_{key.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return env

    def start(
        self,
        nsqd: Nsqd | None,
        topic: str = "work",
        channel: str = "workers",
        argv: Iterable[str] | None = None,
        **settings: object,
    ) -> Worker:
        """Run the recording worker script (or `argv`) with NSQ_* settings from keyword arguments."""
        index = len(self.workers)
        health_port = free_port()
        record_path = self.root / f"records-{index}.jsonl"
        env = self.env_for(
            nsqd, topic, channel, **{"health_port": health_port, "RECORD_FILE": record_path, **settings}
        )
        command = list(argv) if argv is not None else [sys.executable, str(self.script)]
        log_path = self.root / f"worker-{index}.log"
        process = Process(f"worker-{index}", command, log_path, env=env)
        # The rig's Process merges os.environ; keep an outer NSQ_* from leaking into the test.
        process.env = {**{k: "" for k in os.environ if k.startswith("NSQ")}, **env}
        worker = Worker(process.start(), record_path, health_port, env)
        attach_logs(self.request, [log_path])
        self.workers.append(worker)
        return worker

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a worker command to completion (for --help and bad settings)."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("NSQ")}
        return subprocess.run(
            argv, env={**clean, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.process.alive():
                worker.popen.kill()
                worker.popen.wait()


def channel(nsqd: Nsqd, topic: str, name: str) -> dict[str, int]:
    return nsqd.channel_stats(topic, name)


def topic_depth(nsqd: Nsqd, topic: str) -> int:
    for t in nsqd.stats(topic).get("topics") or []:  # type: ignore[attr-defined]
        if t["topic_name"] == topic:
            return int(t["message_count"])
    return 0


def settled(nsqd: Nsqd, topic: str, name: str) -> Callable[[], dict[str, int] | None]:
    """A check: the channel has nothing queued, deferred or in flight."""

    def check() -> dict[str, int] | None:
        stats = channel(nsqd, topic, name)
        if stats and stats["depth"] == 0 and stats["in_flight_count"] == 0 and stats["deferred_count"] == 0:
            return stats
        return None

    return check


def clients(nsqd: Nsqd, topic: str, name: str) -> list[dict[str, Any]]:
    for t in nsqd.stats(topic).get("topics") or []:  # type: ignore[attr-defined]
        for c in t["channels"]:
            if c["channel_name"] == name:
                return list(c["clients"])
    return []


def bodies(*items: dict[str, Any] | str) -> list[bytes]:
    return [(json.dumps(item) if isinstance(item, dict) else item).encode() for item in items]
