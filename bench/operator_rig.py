"""The parts the operator benchmark drives: a control plane, a fake lookupd, a watch, the operators.

- `BenchCluster`: the rig's control plane (tests/rig/kube.py) with the controller manager's and the
  scheduler's client rate limits raised, so 10,000 Deployments roll out in minutes, not an hour,
  and one big kwok node, so every tiny worker pod fits and goes Running.
- `FakeLookupd`: an HTTP server on loopback answering `/lookup?topic=T` from a set of producers the
  benchmark changes at will; it counts requests per topic and notes when it first served each nsqd.
- `DeploymentWatch`: a metadata-only watch on the operator's Deployments in one namespace, noting
  when each one arrived (the objects' creationTimestamp has one-second resolution).
- `OperatorSide`: how to start one side (the previous design from a git worktree, or v2).
- `api_writes`: the API server's own request counters, summed for the writes the operator makes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from bench.harness import PYTHON, VENV_BIN, BenchError
from tests.rig.http import LocalHttpServer
from tests.rig.kube import KubeCluster, fake_node
from tests.rig.procs import Process, free_port
from tests.rig.tools import PROJECT_ROOT

CRD = PROJECT_ROOT / "deploy" / "crds" / "nsqconsumers.nsqoperator.dev.yaml"
MANAGED = "app.kubernetes.io/managed-by=nsq-operator"
ANNOTATION_NSQD = "nsqoperator.dev/nsqd-address"
LABEL_CONSUMER = "nsqoperator.dev/consumer"
NSQD_TCP_PORT = 4150
BIG_NODE = "kwok-bench-0"
# The controller manager's and scheduler's client limits (defaults 20 and 50 requests/s): raised so
# they keep up with the operator instead of leaving thousands of ReplicaSets and pods queued.
CONTROL_PLANE_QPS = {"kube-controller-manager": ("100", "200"), "kube-scheduler": ("100", "200")}
META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
META_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")


# -- the control plane -----------------------------------------------------------------------------


class BenchCluster(KubeCluster):
    """The rig's control plane, sized for thousands of tiny pods (see the module's docstring)."""

    def _spawn(self, name: str, argv: list[str]) -> Process:
        limits = CONTROL_PLANE_QPS.get(name)
        if limits is not None:
            argv = [*argv, f"--kube-api-qps={limits[0]}", f"--kube-api-burst={limits[1]}"]
        return super()._spawn(name, argv)

    @classmethod
    def start_for_bench(cls, root: Path) -> BenchCluster:
        cluster = cls(root)
        try:
            cluster._start()
            cluster.kubectl("apply", "-f", str(CRD))
            cluster.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s", "crd/nsqconsumers.nsqoperator.dev"
            )
            cluster.apply(big_node(BIG_NODE))
            cluster.wait_for(lambda: _node_ready(cluster, BIG_NODE), timeout=60, what=f"{BIG_NODE} Ready")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    # -- raw API calls with the admin credentials (kubectl is too slow for thousands of objects) --

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`; no proxy either
        session.cert = (str(self.pki.admin_cert), str(self.pki.admin_key))
        session.verify = str(self.pki.ca_cert)
        return session


def big_node(name: str) -> dict[str, Any]:
    """A kwok node with room for 20,000 pods of 10m CPU and 16Mi each."""
    node = fake_node(name)
    room = {"cpu": "1000", "memory": "2Ti", "pods": "20000"}
    node["status"]["allocatable"] = dict(room)
    node["status"]["capacity"] = dict(room)
    return node


def _node_ready(cluster: KubeCluster, name: str) -> bool:
    node = cluster.get_json("node", name)
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", [])
    )


def create_namespace(cluster: KubeCluster, name: str) -> None:
    cluster.kubectl("create", "namespace", name)


def consumer(name: str, topic: str, channel: str, lookupd: str, poll: int, grace: int) -> dict[str, Any]:
    """An NsqConsumer with tiny worker pods (10m CPU, 16Mi), so thousands fit on kwok's node."""
    tiny = {"cpu": "10m", "memory": "16Mi"}
    return {
        "apiVersion": "nsqoperator.dev/v1alpha1",
        "kind": "NsqConsumer",
        "metadata": {"name": name},
        "spec": {
            "topic": topic,
            "channel": channel,
            "lookupd": {"httpAddresses": [lookupd], "pollIntervalSeconds": poll},
            "nsqdRemovalGraceSeconds": grace,
            "worker": {"resources": {"requests": dict(tiny), "limits": dict(tiny)}},
        },
    }


def apply_all(cluster: KubeCluster, namespace: str, objects: Sequence[Mapping[str, Any]]) -> None:
    """One `kubectl apply` of a List (a hundred consumers take about a second)."""
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def converged(cluster: BenchCluster, session: requests.Session, namespace: str, expected: int) -> bool:
    """`expected` Deployments of the operator's, each rolled out with every replica available."""
    url = f"{cluster.server}/apis/apps/v1/namespaces/{namespace}/deployments"
    response = session.get(url, params={"labelSelector": MANAGED}, timeout=60)
    response.raise_for_status()
    items = response.json().get("items") or []
    if len(items) != expected:
        return False
    for item in items:
        spec, status = item.get("spec", {}), item.get("status", {})
        if status.get("observedGeneration", 0) < item["metadata"].get("generation", 0):
            return False
        if status.get("availableReplicas", 0) < spec.get("replicas", 1):
            return False
    return True


def count_deployments(cluster: BenchCluster, session: requests.Session, namespace: str) -> int:
    """How many Deployments of the operator's the API server holds: one metadata-only LIST."""
    url = f"{cluster.server}/apis/apps/v1/namespaces/{namespace}/deployments"
    response = session.get(url, params={"labelSelector": MANAGED}, headers={"Accept": META_LIST}, timeout=60)
    response.raise_for_status()
    return len(response.json().get("items") or [])


def leases(cluster: BenchCluster, session: requests.Session, namespace: str) -> list[dict[str, Any]]:
    url = f"{cluster.server}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    response = session.get(url, timeout=10)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json().get("items") or []
    return items


# -- the API server's own counters -----------------------------------------------------------------

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def request_counts(cluster: BenchCluster, session: requests.Session) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total summed by (resource, subresource, verb), from the API server's /metrics."""
    response = session.get(f"{cluster.server}/metrics", timeout=30)
    response.raise_for_status()
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in response.text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition("}")
        labels = dict(_LABEL.findall(labels_text))
        key = (labels.get("resource", ""), labels.get("subresource", ""), labels.get("verb", ""))
        counts[key] += int(float(value.strip()))
    return counts


def api_writes(
    before: Counter[tuple[str, str, str]], after: Counter[tuple[str, str, str]]
) -> dict[str, dict[str, int]]:
    """Writes between two scrapes: to Deployments themselves (not their status: the controller manager
    writes that), to NsqConsumers (any subresource), and, for context, events and leases."""
    delta = after - before
    groups: dict[str, dict[str, int]] = {"deployments": {}, "nsqconsumers": {}, "events": {}, "leases": {}}
    for (resource, subresource, verb), count in delta.items():
        if verb not in WRITE_VERBS or not count:
            continue
        if resource == "deployments" and subresource == "":
            group = "deployments"
        elif resource == "nsqconsumers":
            group = "nsqconsumers"
        elif resource in ("events", "leases") and subresource == "":
            group = resource
        else:
            continue
        label = verb if resource != "nsqconsumers" or not subresource else f"{verb} {subresource}"
        groups[group][label] = groups[group].get(label, 0) + count
    return groups


# -- a fake nsqlookupd -----------------------------------------------------------------------------


def nsqd_host(index: int) -> str:
    """The broadcast address of fake nsqd number `index` (1, 2, ...): 10.0.0.1, ..., 10.0.1.0, ..."""
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


def nsqd_address(host: str) -> str:
    return f"{host}:{NSQD_TCP_PORT}"


class FakeLookupd:
    """`GET /lookup?topic=T` answered from `producers[T]`, which the benchmark may change at any time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._producers: dict[str, list[str]] = {}
        self.requests: Counter[str] = Counter()
        self.first_served: dict[tuple[str, str], float] = {}
        self.hung_up = 0  # answers the client no longer waited for (it timed out first)
        self._server = LocalHttpServer(self._answer)

        def hung_up(*_: object) -> None:  # instead of a traceback on stderr
            with self._lock:
                self.hung_up += 1

        setattr(self._server.server, "handle_error", hung_up)  # noqa: B010  (mypy: no method assignment)

    @property
    def url(self) -> str:
        return self._server.url

    def set(self, topic: str, hosts: Iterable[str]) -> None:
        with self._lock:
            self._producers[topic] = list(hosts)

    def add(self, topic: str, host: str) -> float:
        """Start listing `host` for `topic`; the moment (time.monotonic) it was added."""
        with self._lock:
            self._producers.setdefault(topic, []).append(host)
            return time.monotonic()

    def remove(self, topic: str, host: str) -> float:
        with self._lock:
            self._producers.get(topic, []).remove(host)
            return time.monotonic()

    def hosts(self, topic: str) -> list[str]:
        with self._lock:
            return list(self._producers.get(topic, []))

    def count(self, topic: str) -> int:
        with self._lock:
            return self.requests[topic]

    def _answer(self, path: str) -> tuple[int, bytes]:
        parts = urlsplit(path)
        if parts.path == "/ping":
            return 200, b"OK"
        if parts.path != "/lookup":
            return 404, b'{"message":"NOT_FOUND"}'
        topic = (parse_qs(parts.query).get("topic") or [""])[0]
        with self._lock:
            self.requests[topic] += 1
            hosts = self._producers.get(topic)
            if hosts is None:
                return 404, b'{"message":"TOPIC_NOT_FOUND"}'
            now = time.monotonic()
            for host in hosts:
                self.first_served.setdefault((topic, host), now)
            producers = [
                {
                    "remote_address": f"{host}:50000",
                    "hostname": f"nsqd-{host}",
                    "broadcast_address": host,
                    "tcp_port": NSQD_TCP_PORT,
                    "http_port": 4151,
                    "version": "1.3.0",
                }
                for host in hosts
            ]
        return 200, json.dumps({"channels": [], "producers": producers}).encode()

    def close(self) -> None:
        self._server.close()


# -- a watch on the operator's Deployments ---------------------------------------------------------


@dataclass
class Seen:
    """One Deployment as the watch saw it: when it arrived and, if it did, when it went."""

    name: str
    consumer: str
    address: str
    arrived: float
    deleted: float | None = None


@dataclass
class DeploymentWatch:
    """Every Deployment labelled as the operator's in `namespace`, with its arrival time (monotonic).

    Metadata only (PartialObjectMetadata), so ten thousand objects cost the API server and this process
    little. Reconnects from the last resourceVersion it saw, and relists when that is too old.
    """

    cluster: BenchCluster
    namespace: str
    seen: dict[str, Seen] = field(default_factory=dict)  # by uid
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _response: requests.Response | None = None

    def start(self) -> DeploymentWatch:
        self._session = self.cluster.session()
        version = self._list()
        self._thread = threading.Thread(target=self._run, args=(version,), daemon=True, name="watch")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching. Closing the response would wait for the reading thread's next line (a
        bookmark may be a minute away), so the socket under it is shut down instead."""
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                connection: Any = response.raw._connection
                connection.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def _url(self) -> str:
        return f"{self.cluster.server}/apis/apps/v1/namespaces/{self.namespace}/deployments"

    def _note(self, meta: Mapping[str, Any], now: float) -> None:
        uid = meta.get("uid", "")
        if uid in self.seen:
            return
        annotations = meta.get("annotations") or {}
        labels = meta.get("labels") or {}
        self.seen[uid] = Seen(
            name=meta.get("name", ""),
            consumer=labels.get(LABEL_CONSUMER, ""),
            address=annotations.get(ANNOTATION_NSQD, ""),
            arrived=now,
        )

    def _list(self) -> str:
        response = self._session.get(
            self._url, params={"labelSelector": MANAGED}, headers={"Accept": META_LIST}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        now = time.monotonic()
        with self._lock:
            listed = set()
            for item in body.get("items") or []:
                self._note(item["metadata"], now)
                listed.add(item["metadata"].get("uid"))
            for uid, seen in self.seen.items():  # gone while we were not watching
                if uid not in listed and seen.deleted is None:
                    seen.deleted = now
        version: str = body["metadata"]["resourceVersion"]
        return version

    def _run(self, version: str) -> None:
        while not self._stop.is_set():
            try:
                version = self._watch(version)
            except Exception as error:
                if self._stop.is_set():
                    return
                self.errors.append(f"{type(error).__name__}: {error}")
                time.sleep(0.5)
                with contextlib.suppress(Exception):
                    version = self._list()

    def _watch(self, version: str) -> str:
        params = {
            "labelSelector": MANAGED,
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "240",
        }
        with self._session.get(
            self._url, params=params, headers={"Accept": META_WATCH}, stream=True, timeout=(10, 300)
        ) as response:
            self._response = response
            response.raise_for_status()
            for line in response.iter_lines():
                if not line:
                    continue
                now = time.monotonic()
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # too old: start again from a fresh list
                        return self._list()
                    raise BenchError(f"watch error: {obj}")
                meta = obj.get("metadata") or {}
                version = meta.get("resourceVersion", version)
                if kind == "ADDED" or kind == "MODIFIED":
                    with self._lock:
                        self._note(meta, now)
                elif kind == "DELETED":
                    with self._lock:
                        self._note(meta, now)
                        gone = self.seen[meta.get("uid", "")]
                        if gone.deleted is None:
                            gone.deleted = now
        return version

    def alive(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen.values() if s.deleted is None]

    def count(self) -> int:
        with self._lock:
            return sum(1 for s in self.seen.values() if s.deleted is None)

    def by_address(self) -> dict[str, list[Seen]]:
        with self._lock:
            found: dict[str, list[Seen]] = {}
            for s in self.seen.values():
                found.setdefault(s.address, []).append(s)
            return found


# -- the two operators -----------------------------------------------------------------------------

RUN_CLI = "from nsq_operator.cli import main; import sys; sys.exit(main())"


@dataclass(frozen=True)
class OperatorSide:
    """One design of the operator: where its code comes from and how it is started."""

    key: str  # "previous" or "v2"
    source: Path | None  # an operator/src to put on PYTHONPATH; None: the work tree's entry point
    commit: str  # what the code is, for the report

    def command(self) -> list[str]:
        if self.source is None:
            return [str(VENV_BIN / "nsq-operator")]
        # -P: nothing from the current directory shadows the code on PYTHONPATH.
        return [PYTHON, "-P", "-c", RUN_CLI]

    def argv(self, namespace: str, liveness: str, extra: Sequence[str] = ()) -> list[str]:
        return [*self.command(), "run", "--namespace", namespace, "--liveness", liveness, *extra]

    def env(self, kubeconfig: Path) -> dict[str, str]:
        env = {"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        return env

    def help_text(self) -> str:
        """`run --help`, to see which flags this side has."""
        env = dict(os.environ) | self.env(Path("/nonexistent"))
        result = subprocess.run(
            [*self.command(), "run", "--help"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        return result.stdout + result.stderr

    def start(
        self, cluster: KubeCluster, namespace: str, log_dir: Path, name: str, extra: Sequence[str] = ()
    ) -> RunningOperator:
        port = free_port()
        liveness = f"http://127.0.0.1:{port}/healthz"
        process = Process(
            name,
            self.argv(namespace, liveness, extra),
            log_dir / f"{name}.log",
            env=self.env(cluster.kubeconfig),
        ).start()
        return RunningOperator(self, process, f"http://127.0.0.1:{port}", time.monotonic())


@dataclass
class RunningOperator:
    side: OperatorSide
    process: Process
    base_url: str  # where its liveness (and, for v2, /metrics) is served
    started: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_live(self, timeout: float = 120, any_status: bool = False) -> float:
        """Until its liveness endpoint answers (200, or anything with `any_status`); seconds from start."""

        def live() -> bool:
            status = requests.get(f"{self.base_url}/healthz", timeout=2).status_code
            return any_status or status == 200

        self.process.wait_until(live, timeout=timeout, what="live")
        return time.monotonic() - self.started

    def metrics(self) -> str | None:
        """Its Prometheus text at /metrics, or None when it serves none."""
        try:
            response = requests.get(f"{self.base_url}/metrics", timeout=5)
        except requests.RequestException:
            return None
        if response.status_code != 200 or "# TYPE" not in response.text:
            return None
        return response.text

    def memory_mib(self) -> dict[str, float]:
        """VmRSS now and VmHWM (the peak), in MiB, from /proc/PID/status."""
        found: dict[str, float] = {}
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) / 1024
        return found

    def stop(self) -> None:
        self.process.stop()


# -- small helpers ---------------------------------------------------------------------------------


def wait(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    """Poll until `predicate()` holds (True) or `timeout` seconds pass (False); errors count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
