"""What the reliability scenarios share: sizes, result rows, a counting worker, a publisher, fake producers.

Nothing here is a test. The pytest process never imports nsq_worker.worker (gevent would patch it):
workers run as subprocesses and say what they handled through a JSON-lines file per process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import requests

from tests.rig.kube import KubeCluster
from tests.rig.nsq import Nsqd
from tests.rig.procs import Process

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOAK_ENV = "NSQ_SOAK"
RESULTS_ENV = "NSQ_RELIABILITY_RESULTS"


# -- sizes -------------------------------------------------------------------------------------------


def soak() -> bool:
    """Whether the long versions were asked for (`NSQ_SOAK=1`, as `make soak` does)."""
    return os.environ.get(SOAK_ENV, "") not in ("", "0", "false", "no")


def mode() -> str:
    return "soak" if soak() else "short"


@dataclass(frozen=True)
class Sizes:
    """How big each scenario runs. The short sizes keep every scenario to seconds in the normal suite."""

    # the worker SIGKILLed during a stream
    kill_messages: int
    kill_count: int
    kill_seconds: float
    # SIGTERM during a stream
    term_messages: int
    term_count: int
    term_seconds: float
    # nsqd SIGKILLed and restarted
    nsqd_messages: int
    nsqd_kills: int
    nsqd_rate: float  # messages a second: below nsqd's --sync-every per --sync-timeout (see the test)
    # failing handlers and a poison message
    failing_messages: int
    # slow handlers, TOUCH
    slow_messages: int
    fast_messages: int
    # control plane
    lookupd_grace: int
    lookupd_poke: bool  # make nsqd re-register with restarted lookupds at once instead of at its 15 s ping
    flaps: int
    api_producers: int
    api_restarts: int
    load_consumers: int
    load_producers: int
    load_seconds: float
    load_poll_seconds: int
    load_churn_every: float


SHORT = Sizes(
    kill_messages=5_000, kill_count=3, kill_seconds=4.0,
    term_messages=1_500, term_count=2, term_seconds=4.0,
    nsqd_messages=2_000, nsqd_kills=1, nsqd_rate=400.0,
    failing_messages=300,
    slow_messages=3, fast_messages=50,
    lookupd_grace=6, lookupd_poke=True,
    flaps=4,
    api_producers=16, api_restarts=1,
    load_consumers=5, load_producers=10, load_seconds=60.0, load_poll_seconds=1, load_churn_every=1.0,
)  # fmt: skip

SOAK = Sizes(
    kill_messages=100_000, kill_count=12, kill_seconds=60.0,
    term_messages=20_000, term_count=8, term_seconds=40.0,
    nsqd_messages=40_000, nsqd_kills=6, nsqd_rate=400.0,
    failing_messages=2_000,
    slow_messages=20, fast_messages=2_000,
    lookupd_grace=30, lookupd_poke=False,
    flaps=40,
    api_producers=60, api_restarts=3,
    load_consumers=20, load_producers=100, load_seconds=600.0, load_poll_seconds=5, load_churn_every=0.5,
)  # fmt: skip


SIZES_ENV = "NSQ_RELIABILITY_SIZES"


def sizes() -> Sizes:
    """SHORT or SOAK, with any field overridden by NSQ_RELIABILITY_SIZES (JSON), e.g. '{"flaps": 10}'."""
    base = SOAK if soak() else SHORT
    return replace(base, **json.loads(os.environ.get(SIZES_ENV) or "{}"))


# -- result rows --------------------------------------------------------------------------------------


def results_dir(which: str | None = None) -> Path:
    """Where rows are written: outside the work tree, one directory per mode."""
    base = os.environ.get(RESULTS_ENV)
    if base:
        root = Path(base)
    else:
        cache = os.environ.get("NSQ_OPERATOR_CACHE") or str(Path.home() / ".cache" / "nsq-operator")
        root = Path(cache) / "reliability"
    return root / (which or mode())


@dataclass
class Row:
    """One line of RELIABILITY.md, filled in by the scenario as it runs."""

    order: float = 0.0
    section: str = ""
    scenario: str = ""
    load: str = ""
    fault: str = ""
    published: int | None = None
    handled: int | None = None
    lost: int | None = None
    duplicates: int | None = None
    saw: list[str] = field(default_factory=list)
    # filled in by the fixture
    outcome: str = ""
    seconds: float = 0.0
    mode: str = ""
    nodeid: str = ""
    finished_at: str = ""
    commit: str = ""

    def see(self, text: str) -> None:
        """Something the user could see: a condition, an event, a log line, a count."""
        self.saw.append(text)

    def count(self, published: int, handled: int, lost: int, duplicates: int) -> None:
        self.published, self.handled, self.lost, self.duplicates = published, handled, lost, duplicates

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def git_commit() -> str:
    result = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    dirty = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    commit = result.stdout.strip() or "unknown"
    return commit + ("+changes" if dirty.stdout.strip() else "")


def write_row(row: Row) -> Path:
    directory = results_dir(row.mode or None)
    directory.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in row.nodeid)[-150:]
    path = directory / f"{safe}.json"
    path.write_text(json.dumps(row.to_json(), indent=2) + "\n")
    return path


def read_rows(which: str) -> list[Row]:
    rows = []
    directory = results_dir(which)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        data = json.loads(path.read_text())
        rows.append(Row(**{k: v for k, v in data.items() if k in Row.__dataclass_fields__}))
    return sorted(rows, key=lambda r: (r.order, r.nodeid))


# -- the counting worker ------------------------------------------------------------------------------

# What it records and why: tests/worker_classes/reliability.py.
WORKER_SCRIPT = Path(__file__).resolve().parents[1] / "worker_classes" / "reliability.py"


class Records:
    """Every record every worker wrote, read incrementally (a soak writes hundreds of thousands)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._offsets: dict[Path, int] = {}

    def refresh(self, paths: Iterable[Path]) -> Records:
        for path in paths:
            if not path.exists():
                continue
            with path.open("rb") as handle:
                handle.seek(self._offsets.get(path, 0))
                data = handle.read()
            end = data.rfind(b"\n") + 1  # a line still being written is read next time
            for line in data[:end].splitlines():
                if line.strip():
                    self.events.append(json.loads(line))
            self._offsets[path] = self._offsets.get(path, 0) + end
        return self

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    def handled(self) -> Counter[str]:
        """How many times each body was handled to the end (`done`, or `give_up` for a poison message)."""
        return Counter(e["body"] for e in self.events if e["event"] in ("done", "give_up"))


@dataclass(frozen=True)
class Tally:
    published: int
    handled: int  # distinct messages handled at least once
    lost: list[str]  # published, never handled
    duplicates: int  # handlings beyond the first
    unexpected: list[str]  # handled but never published (must be empty)


def tally(published: Sequence[bytes], handled: Counter[str]) -> Tally:
    sent = {b.decode() for b in published}
    return Tally(
        published=len(sent),
        handled=len(sent & handled.keys()),
        lost=sorted(sent - handled.keys()),
        duplicates=sum(n - 1 for body, n in handled.items() if body in sent),
        unexpected=sorted(handled.keys() - sent),
    )


# -- publishing ---------------------------------------------------------------------------------------


class Stream(threading.Thread):
    """Publishes bodies to one nsqd at a steady rate over `seconds`, retrying batches nsqd refuses.

    A batch counts as published once nsqd answered 200 to its MPUB. While nsqd is down the same batch is
    retried (the publisher's own at-least-once), so a batch nsqd took but could not answer before it died
    is published twice: those show up as duplicates, never as losses.
    """

    def __init__(self, nsqd: Nsqd, topic: str, bodies: Sequence[bytes], seconds: float, batch: int = 50):
        super().__init__(daemon=True, name=f"stream-{topic}")
        self.nsqd = nsqd
        self.topic = topic
        self.bodies = list(bodies)
        self.seconds = seconds
        self.batch = batch
        self.published = 0
        self.refused = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            chunks = [self.bodies[i : i + self.batch] for i in range(0, len(self.bodies), self.batch)]
            interval = self.seconds / max(len(chunks), 1)
            start = time.monotonic()
            for index, chunk in enumerate(chunks):
                delay = start + index * interval - time.monotonic()
                if delay > 0 and self._halt.wait(delay):
                    return
                while not self._halt.is_set():
                    try:
                        self.nsqd.publish(self.topic, chunk, batch=len(chunk))
                    except requests.RequestException:
                        self.refused += 1
                        self._halt.wait(0.1)
                        continue
                    self.published += len(chunk)
                    break
        except BaseException as error:  # reported by wait()
            self.error = error

    def progress(self) -> float:
        return self.published / max(len(self.bodies), 1)

    def wait_for_progress(self, fraction: float, timeout: float) -> None:
        """Wait until this fraction of the bodies is published (the stream keeps going meanwhile)."""
        deadline = time.monotonic() + timeout
        while self.progress() < fraction:
            if self.error is not None or (not self.is_alive() and self.progress() < fraction):
                raise AssertionError(f"the publisher stopped at {self.published}: {self.error!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the publisher reached only {self.progress():.0%} in {timeout:.0f}s")
            time.sleep(0.02)

    def wait(self, timeout: float) -> None:
        self.join(timeout)
        if self.is_alive():
            self._halt.set()
            raise AssertionError(f"the publisher did not finish in {timeout}s ({self.published} published)")
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._halt.set()


def channel_settled(nsqd: Nsqd, topic: str, channel: str) -> dict[str, int] | None:
    stats = nsqd.channel_stats(topic, channel)
    if stats and stats["depth"] == 0 and stats["in_flight_count"] == 0 and stats["deferred_count"] == 0:
        return stats
    return None


# -- nsqlookupd's TCP protocol: producers without an nsqd -----------------------------------------------


class FakeProducer:
    """One producer registered with a real nsqlookupd over its TCP protocol (V1), as nsqd registers.

    IDENTIFY names the address workers would connect to; REGISTER lists the topic (and channel). The
    registration lasts as long as the connection: close() is an nsqd going away. Nothing listens on
    the address: the operator only needs lookupd to list it, and kwok runs the worker pods.
    """

    def __init__(self, lookupd_tcp: str, topic: str, port: int, channel: str = "c",
                 host: str = "127.0.0.1") -> None:  # fmt: skip
        self.topic = topic
        self.address = f"{host}:{port}"
        lookup_host, lookup_port = lookupd_tcp.rsplit(":", 1)
        self.sock = socket.create_connection((lookup_host, int(lookup_port)), timeout=5)
        self._lock = threading.Lock()
        self.sock.sendall(b"  V1")
        identity = {
            "broadcast_address": host, "hostname": f"fake-{port}", "tcp_port": port,
            "http_port": port, "version": "1.3.0",
        }  # fmt: skip
        body = json.dumps(identity).encode()
        self._command(b"IDENTIFY\n" + struct.pack(">I", len(body)) + body)
        reply = self._command(f"REGISTER {topic} {channel}\n".encode())
        if reply != b"OK":
            raise RuntimeError(f"lookupd refused REGISTER {topic}: {reply!r}")

    def _command(self, data: bytes) -> bytes:
        with self._lock:
            self.sock.sendall(data)
            size = struct.unpack(">I", self._read(4))[0]
            return self._read(size)

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("lookupd closed the connection")
            data += chunk
        return data

    def ping(self) -> None:
        """What nsqd sends every 15 s; keeps the producer active past --inactive-producer-timeout."""
        self._command(b"PING\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def close_all(producers: Iterable[FakeProducer]) -> None:
    for producer in list(producers):
        producer.close()


# -- the control plane, read cheaply -------------------------------------------------------------------

PARTIAL_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class Api:
    """Direct GETs against the rig's API server with the admin certificate: fast enough to poll."""

    def __init__(self, kube: KubeCluster) -> None:
        self.kube = kube
        self.session = requests.Session()
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override a session's verify.
        self.tls: dict[str, Any] = {
            "verify": str(kube.pki.ca_cert), "cert": (str(kube.pki.admin_cert), str(kube.pki.admin_key)),
        }  # fmt: skip

    def get(self, path: str, metadata_only: bool = False, **params: str) -> Any:
        headers = {"Accept": PARTIAL_METADATA} if metadata_only else {}
        response = self.session.get(
            f"{self.kube.server}{path}", params=params, headers=headers, timeout=30, **self.tls
        )
        response.raise_for_status()
        return response.json()

    def deployments(self, namespace: str, consumer: str | None = None) -> list[dict[str, Any]]:
        """The worker Deployments' metadata (name, uid, labels, annotations)."""
        params = {"labelSelector": f"nsqoperator.dev/consumer={consumer}"} if consumer else {}
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        items: list[dict[str, Any]] = self.get(path, metadata_only=True, **params)["items"] or []
        return items

    def count(self, namespace: str, resource: str) -> int:
        group = "/apis/apps/v1" if resource in ("deployments", "replicasets") else "/api/v1"
        return len(self.get(f"{group}/namespaces/{namespace}/{resource}", metadata_only=True)["items"] or [])


def address_of(metadata_item: dict[str, Any]) -> str:
    return str(metadata_item["metadata"]["annotations"]["nsqoperator.dev/nsqd-address"])


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc/<pid>/status (VmRSS, in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class RssSampler(threading.Thread):
    """Samples a process's RSS every `interval` seconds while a scenario runs."""

    def __init__(self, process: Process, interval: float) -> None:
        super().__init__(daemon=True, name="rss")
        self.process = process
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()
        self._start = time.monotonic()

    def run(self) -> None:
        while not self._halt.is_set():
            if self.process.alive():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    self.samples.append((time.monotonic() - self._start, rss_kib(self.process.pid)))
            self._halt.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self._halt.set()
        self.join(5)
        return self.samples
