"""Bad input: each a clear error naming the problem, no crash, nothing else disturbed.

The CRD's schema already refuses malformed NsqConsumers (tests/e2e/test_crd_validation.py has that
table); these are the bad inputs it lets through: lookupds that answer garbage or nothing, names so
long that child names must be cut, an image that does not exist, Secrets that do not exist. One
operator watches one namespace where every bad consumer lives next to a healthy one, which must not
notice. (Bad worker settings are in test_bad_settings.py.)
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nsq_operator import naming
from tests.integration.test_operator_kube import TOPIC, Namespace, consumer
from tests.reliability.conftest import install_crd
from tests.reliability.support import Row
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster
from tests.rig.reporting import attach_logs

pytestmark = pytest.mark.kube

LONG_TOPIC = "t" * 64  # NSQ's longest topic name
LONG_PREFIX = "a-consumer-whose-name-is-as-long-as-kubernetes-allows-it-x"  # 58 characters
LONG_NAMES = (LONG_PREFIX + "-one1", LONG_PREFIX + "-two2")  # 63 characters each
MISSING_IMAGE = "registry.invalid/nsq-worker:does-not-exist"
SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "10m", "memory": "16Mi"}}


class GarbageLookupd:
    """A local HTTP server that answers /lookup the way broken proxies and half-dead hosts do.

    The kind of answer is the URL's first path segment: http://host:port/<kind>/lookup?topic=...
    """

    ANSWERS = {
        "html": (200, b"<html><body><h1>Welcome to nginx!</h1></body></html>"),
        "truncated": (200, b'{"channels":[],"producers":[{"broadcast_address":"10.0.0.7","tcp_po'),
        "shape": (200, b'{"channels": [], "producers": "all of them"}'),
    }

    def __init__(self) -> None:
        answers = self.ANSWERS

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                kind = self.path.strip("/").split("/")[0]
                if kind == "hang":
                    time.sleep(30)  # longer than the operator's 5-second read timeout
                    return
                status, body = answers[kind]
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if body.startswith(b"<") else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{kind}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stage:
    """Everything the bad-input cases share: one operator, one real NSQ cluster, one garbage lookupd."""

    ns: Namespace
    nsq: NsqCluster
    garbage: GarbageLookupd
    healthy_uid: str
    log_dirs: list[Path]

    @property
    def lookupd(self) -> str:
        return self.nsq.lookupd_http_urls[0]

    @property
    def nsqd(self) -> str:
        return self.nsq.nsqds[0].tcp_address


def bad_consumers(stage: Stage) -> dict[str, dict[str, Any]]:
    """Every bad NsqConsumer of the table, by name."""
    real, garbage = stage.lookupd, stage.garbage

    def make(name: str, lookupd: list[str], **spec: Any) -> dict[str, Any]:
        worker = {"resources": SMALL, **spec.pop("worker", {})}
        return consumer(lookupd, name=name, worker=worker, **spec)

    return {
        "html": make("html", [garbage.url("html")]),
        "truncated": make("truncated", [garbage.url("truncated")]),
        "shape": make("shape", [garbage.url("shape")]),
        "hang": make("hang", [garbage.url("hang")]),
        "mixed": make("mixed", [garbage.url("html"), real]),
        LONG_NAMES[0]: make(LONG_NAMES[0], [real], topic=LONG_TOPIC),
        LONG_NAMES[1]: make(LONG_NAMES[1], [real], topic=LONG_TOPIC),
        "image": make("image", [real], worker={"image": MISSING_IMAGE}),
        "tls": make("tls", [real], worker={"tls": {"secretName": "absent-tls"}}),
        "auth": make("auth", [real], worker={"auth": {"secretName": "absent-auth", "key": "secret"}}),
    }


@pytest.fixture(scope="module")
def stage(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    root = tmp_path_factory.mktemp("bad-input")
    install_crd(kube_cluster)
    nsq = NsqCluster.start(root / "nsq", nsqd_count=1, lookupd_count=1)
    garbage = GarbageLookupd()
    name = f"bad-{os.getpid()}-{int(time.time()) % 100000}"
    kube_cluster.kubectl("create", "namespace", name)
    ns = Namespace(kube_cluster, name, root / "operator")
    try:
        nsq.nsqds[0].create_topic(TOPIC)
        nsq.nsqds[0].create_topic(LONG_TOPIC)
        nsq.wait_for_producers(TOPIC, [nsq.nsqds[0].tcp_address])
        ns.start_operator()
        ns.apply(consumer(nsq.lookupd_http_urls, name="healthy", worker={"resources": SMALL}))
        ns.wait(lambda: ns.condition("Ready", "healthy").get("reason") == "AllWorkersReady", "healthy Ready")
        uid = ns.deployments("healthy")[nsq.nsqds[0].tcp_address]["metadata"]["uid"]
        staged = Stage(ns, nsq, garbage, uid, [root / "operator", nsq.log_dir, kube_cluster.log_dir])
        for body in bad_consumers(staged).values():
            ns.apply(body)
        yield staged
    finally:
        ns.kubectl("delete", "nsqconsumers", "--all", "--timeout=30s", check=False)
        for process in ns.operators:
            process.stop()
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
        garbage.close()
        nsq.stop()


def healthy_undisturbed(stage: Stage) -> str:
    ns = stage.ns
    ready = ns.condition("Ready", "healthy")
    assert ready.get("reason") == "AllWorkersReady", ready
    assert ns.deployments("healthy")[stage.nsqd]["metadata"]["uid"] == stage.healthy_uid
    assert all(p.alive() for p in ns.operators)
    return "the healthy consumer next to it stayed Ready=True with the same Deployment; the operator ran on"


def condition_holds(ns: Namespace, name: str, type_: str, status: str, reason: str) -> Callable[[], bool]:
    def check() -> bool:
        found = ns.condition(type_, name)
        return found.get("status") == status and found.get("reason") == reason

    return check


def warning_events(ns: Namespace, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in ns.events(name) if e["reason"] == reason and e["type"] == "Warning"]


@pytest.mark.parametrize(
    ("kind", "says"),
    [("html", "not JSON"), ("truncated", "not JSON"), ("shape", "without a producers list"),
     ("hang", "Read timed out")],
    ids=["html", "truncated-json", "wrong-shape", "never-answers"],
)  # fmt: skip
def test_a_lookupd_answering_garbage_is_reported_by_name(
    stage: Stage, row: Row, kind: str, says: str, request: pytest.FixtureRequest
) -> None:
    attach_logs(request, stage.log_dirs)
    ns, url = stage.ns, stage.garbage.url(kind)
    row.order, row.section = 4.1 + 0.001 * ["html", "truncated", "shape", "hang"].index(kind), "Bad input"
    row.scenario = {
        "html": "The only lookupd answers an HTML page",
        "truncated": "The only lookupd answers truncated JSON",
        "shape": "The only lookupd answers JSON of the wrong shape",
        "hang": "The only lookupd accepts the connection and never answers",
    }[kind]
    row.load = "one NsqConsumer next to a healthy one, one operator"
    row.fault = f"lookupd.httpAddresses: [{url}] (a local HTTP server)"
    ns.wait(condition_holds(ns, kind, "LookupdReachable", "False", "Unreachable"), "LookupdReachable=False")
    message = ns.condition("LookupdReachable", kind)["message"]
    assert url in message
    assert says in message
    assert ns.condition("Ready", kind)["status"] == "Unknown"
    ns.wait(lambda: warning_events(ns, kind, "LookupdFailed"), "a LookupdFailed warning")
    event = warning_events(ns, kind, "LookupdFailed")[0]["message"]
    assert url in event
    assert ns.deployments(kind) == {}
    row.see(
        f"LookupdReachable=False Unreachable: '{message[:160]}'; Ready=Unknown; Warning LookupdFailed: "
        f"'{event[:120]}'; no Deployment"
    )
    row.see(healthy_undisturbed(stage))


def test_garbage_next_to_a_real_lookupd_still_gives_the_union(
    stage: Stage, row: Row, request: pytest.FixtureRequest
) -> None:
    attach_logs(request, stage.log_dirs)
    ns = stage.ns
    row.order, row.section, row.scenario = 4.2, "Bad input", "One lookupd answers HTML, the other is real"
    row.load = "one NsqConsumer next to a healthy one"
    row.fault = f"lookupd.httpAddresses: [{stage.garbage.url('html')}, <real lookupd>]"
    ns.wait(condition_holds(ns, "mixed", "LookupdReachable", "True", "PartiallyReachable"), "partial")
    ns.wait(condition_holds(ns, "mixed", "Ready", "True", "AllWorkersReady"), "Ready")
    assert sorted(ns.deployments("mixed")) == [stage.nsqd]
    message = ns.condition("LookupdReachable", "mixed")["message"]
    assert "1 of 2 nsqlookupd answered" in message
    row.see(
        f"LookupdReachable=True PartiallyReachable: '{message[:140]}'; the real lookupd's nsqd got its "
        "worker; Ready=True"
    )
    row.see(healthy_undisturbed(stage))


def test_names_so_long_that_child_names_must_be_shortened(
    stage: Stage, row: Row, request: pytest.FixtureRequest
) -> None:
    attach_logs(request, stage.log_dirs)
    ns = stage.ns
    row.order, row.section = 4.3, "Bad input"
    row.scenario = "Names so long that the children's names must be cut"
    row.load = "two NsqConsumers with 63-character names sharing 58, on a 64-character topic"
    row.fault = f"metadata.name: {LONG_NAMES[0]} and ...{LONG_NAMES[1][-8:]}; topic: 't' x 64"
    names = []
    for name in LONG_NAMES:
        ns.wait(condition_holds(ns, name, "Ready", "True", "AllWorkersReady"), f"{name} Ready", timeout=60)
        deployment = ns.deployments(name)[stage.nsqd]
        names.append(deployment["metadata"]["name"])
        assert deployment["metadata"]["name"] == naming.worker_name(name, stage.nsqd)
        assert deployment["metadata"]["labels"]["nsqoperator.dev/consumer"] == name
    assert all(len(n) <= 63 for n in names)
    assert len(set(names)) == 2
    assert all(n.startswith(LONG_PREFIX[:52]) for n in names)
    pods = ns.get("pods", "-l", f"nsqoperator.dev/consumer={LONG_NAMES[0]}")["items"]
    assert len(pods) == 1
    row.see(
        f"Deployments {names[0]} and {names[1]} ({len(names[0])} characters: 52 of the name, a hash "
        "of name and nsqd); pods running, Ready=True for both"
    )
    row.see(healthy_undisturbed(stage))


def test_an_image_that_does_not_exist(stage: Stage, row: Row, request: pytest.FixtureRequest) -> None:
    attach_logs(request, stage.log_dirs)
    ns = stage.ns
    row.order, row.section = 4.4, "Bad input"
    row.scenario = "A worker image that does not exist"
    row.load = "one NsqConsumer next to a healthy one"
    row.fault = (f"worker.image: {MISSING_IMAGE}; kwok runs any image, so the kubelet's ErrImagePull is "
                 "written into the pod's status by the test")  # fmt: skip
    ns.wait(lambda: ns.deployments("image"), "the Deployment")
    deployment = ns.deployments("image")[stage.nsqd]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == MISSING_IMAGE
    ns.wait(lambda: ns.get("pods", "-l", "nsqoperator.dev/consumer=image")["items"], "the pod")
    pod = ns.get("pods", "-l", "nsqoperator.dev/consumer=image")["items"][0]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    waiting = {"reason": "ErrImagePull", "message": f'failed to pull image "{MISSING_IMAGE}": not found'}
    status = {"status": {
        "phase": "Running",  # kwok leaves Running pods alone; a Pending one it would make Ready again
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                        "lastTransitionTime": now},
                       {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
                        "lastTransitionTime": now}],
        "containerStatuses": [{"name": "worker", "image": MISSING_IMAGE, "imageID": "", "ready": False,
                               "restartCount": 0, "started": False, "state": {"waiting": waiting}}],
    }}  # fmt: skip
    ns.kubectl("patch", "pod", pod["metadata"]["name"], "--subresource=status", "--type=merge",
               "-p", json.dumps(status))  # fmt: skip
    ns.wait(condition_holds(ns, "image", "Ready", "False", "WorkersNotReady"), "Ready=False", timeout=60)
    message = ns.condition("Ready", "image")["message"]
    assert message == "0 of 1 workers ready for 1 nsqd."
    row.see(
        f"the Deployment was made with the image as given; Ready=False WorkersNotReady: '{message}' "
        "(the reason, ErrImagePull, is on the pod, not in the NsqConsumer's status)"
    )
    row.see(healthy_undisturbed(stage))


@pytest.mark.parametrize("which", ["tls", "auth"])
def test_a_missing_secret_is_reported(
    stage: Stage, row: Row, which: str, request: pytest.FixtureRequest
) -> None:
    attach_logs(request, stage.log_dirs)
    ns = stage.ns
    secret = f"absent-{which}"
    row.order, row.section = 4.5 + (0.001 if which == "auth" else 0), "Bad input"
    row.scenario = f"The Secret for {which.upper()} does not exist"
    row.load = "one NsqConsumer next to a healthy one"
    row.fault = f"worker.{which}.secretName: {secret} (no such Secret in the namespace)"
    ns.wait(lambda: ns.deployments(which), "the Deployment")
    time.sleep(3)  # a few polls

    def reported() -> list[str]:
        said = [
            f"{c['type']}={c['status']} {c['reason']}: {c['message']}"
            for c in ns.status(which).get("conditions", [])
            if secret in c.get("message", "")
        ]
        said += [f"{e['type']} {e['reason']}: {e['message']}" for e in ns.events(which)
                 if secret in e.get("message", "")]  # fmt: skip
        return said

    said = reported()
    ready = ns.condition("Ready", which)
    # The operator may not read Secrets (least privilege), so it cannot know one is missing: the pod
    # names it and the kubelet refuses to start the container (CreateContainerConfigError: secret
    # "absent-..." not found), which keeps the worker not ready. kwok runs no containers, so the rig
    # can show the reference but not the kubelet's refusal.
    pod = next(iter(ns.deployments(which).values()))["spec"]["template"]["spec"]
    row.see(
        f"the worker pod references Secret {secret} (the kubelet reports it missing on the pod: "
        f"CreateContainerConfigError); operator: Ready={ready.get('status')} {ready.get('reason')}; "
        f"conditions or events naming {secret}: {said or 'none (it may not read Secrets)'}"
    )
    row.see(healthy_undisturbed(stage))
    assert secret in json.dumps(pod), "the pod must reference the Secret by name"
    assert not any(
        secret in c.get("message", "") and c.get("reason") == "InvalidSpec"
        for c in ns.status(which).get("conditions", [])
    ), "a reference is not a spec error"
