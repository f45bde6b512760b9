"""Bad input: each a clear error naming the problem, no crash, nothing else disturbed.

The CRD's schema already refuses malformed NsqConsumers (tests/e2e/test_crd_validation.py has that
table); these are the bad inputs it lets through: lookupds that answer garbage or nothing, names so
long that child names must be cut, an image that does not exist, Secrets that do not exist, a worker
that exits at once. One
operator watches one namespace where every bad consumer lives next to a healthy one, which must not
notice. (Bad worker settings are in test_bad_settings.py.)
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nsq_operator import manifests, naming
from tests.conftest import Images
from tests.integration.operators import TOPIC, Namespace, consumer
from tests.reliability.conftest import install_crd
from tests.reliability.support import Row
from tests.rig import hostnet
from tests.rig.http import LocalHttpServer
from tests.rig.kube import KubeCluster
from tests.rig.node import placement
from tests.rig.nsq import NsqCluster
from tests.rig.reporting import attach_logs

pytestmark = pytest.mark.kube

LONG_TOPIC = "t" * 64  # NSQ's longest topic name
LONG_PREFIX = "a-consumer-whose-name-is-as-long-as-kubernetes-allows-it-x"  # 58 characters
LONG_NAMES = (LONG_PREFIX + "-one1", LONG_PREFIX + "-two2")  # 63 characters each
# Pull policy Never: the kubelet refuses an image it lacks without asking any registry.
MISSING_IMAGE = "nsq-operator/no-such-worker:does-not-exist"
HUGE = {"requests": {"cpu": "64", "memory": "16Mi"}, "limits": {"cpu": "64", "memory": "16Mi"}}
# The workers run for real on the real node: enough memory for Python, little CPU.
SMALL = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "50m", "memory": "128Mi"}}
ON_THE_NODE = {
    **placement(),
    "image": "nsq-operator/worker:test",
    "imagePullPolicy": "Never",
    "args": ["nsq_worker.examples:NoopWorker"],
}


class GarbageLookupd(LocalHttpServer):
    """A local HTTP server that answers /lookup the way broken proxies and half-dead hosts do.

    The kind of answer is the URL's first path segment: http://host:port/<kind>/lookup?topic=...
    """

    ANSWERS = {
        "html": (200, b"<html><body><h1>Welcome to nginx!</h1></body></html>"),
        "truncated": (200, b'{"channels":[],"producers":[{"broadcast_address":"10.0.0.7","tcp_po'),
        "shape": (200, b'{"channels": [], "producers": "all of them"}'),
    }

    def __init__(self) -> None:
        def answer(path: str) -> tuple[int, bytes]:
            kind = path.strip("/").split("/")[0]
            if kind == "hang":
                time.sleep(30)  # longer than the operator's 5-second read timeout
            return self.ANSWERS.get(kind, (503, b"<html>hung up</html>"))

        super().__init__(answer)

    def kind_url(self, kind: str) -> str:
        return f"{self.url}/{kind}"


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
        worker = {"resources": SMALL, **ON_THE_NODE, **spec.pop("worker", {})}
        return consumer(lookupd, name=name, worker=worker, **spec)

    return {
        "html": make("html", [garbage.kind_url("html")]),
        "truncated": make("truncated", [garbage.kind_url("truncated")]),
        "shape": make("shape", [garbage.kind_url("shape")]),
        "hang": make("hang", [garbage.kind_url("hang")]),
        "mixed": make("mixed", [garbage.kind_url("html"), real]),
        LONG_NAMES[0]: make(LONG_NAMES[0], [real], topic=LONG_TOPIC),
        LONG_NAMES[1]: make(LONG_NAMES[1], [real], topic=LONG_TOPIC),
        "image": make("image", [real], worker={"image": MISSING_IMAGE}),
        "tls": make("tls", [real], worker={"tls": {"secretName": "absent-tls"}}),
        "auth": make("auth", [real], worker={"auth": {"secretName": "absent-auth", "key": "secret"}}),
        "huge": make("huge", [real], worker={"resources": HUGE}),
        "crash": make("crash", [real], worker={"env": [{"name": "NSQ_LOG_LEVEL", "value": "LOUD"}]}),
    }


@pytest.fixture(scope="module")
def stage(
    kube_cluster: KubeCluster, node_images: Images, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stage]:
    """The consumers' pods run on the real node: every kubelet state in this table is the kubelet's."""
    root = tmp_path_factory.mktemp("bad-input")
    install_crd(kube_cluster)
    nsq = NsqCluster.start(root / "nsq", nsqd_count=1, lookupd_count=1, host=hostnet.GATEWAY)
    garbage = GarbageLookupd()
    name = f"bad-{os.getpid()}-{int(time.time()) % 100000}"
    kube_cluster.kubectl("create", "namespace", name)
    ns = Namespace(kube_cluster, name, root / "operator")
    try:
        nsq.nsqds[0].create_topic(TOPIC)
        nsq.nsqds[0].create_topic(LONG_TOPIC)
        nsq.wait_for_producers(TOPIC, [nsq.nsqds[0].tcp_address])
        ns.start_operator()
        healthy = {"resources": SMALL, **ON_THE_NODE}
        ns.apply(consumer(nsq.lookupd_http_urls, name="healthy", worker=healthy))
        healthy_ready = condition_holds(ns, "healthy", "Ready", "True", "AllWorkersReady")
        try:
            ns.wait(healthy_ready, "healthy Ready", timeout=90)
        except Exception as error:
            states = [(p["metadata"]["name"], p["status"]) for p in ns.get("pods")["items"]]
            raise AssertionError(f"{error}; the pods: {states}") from error
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
     ("hang", "no complete answer within")],
    ids=["html", "truncated-json", "wrong-shape", "never-answers"],
)  # fmt: skip
def test_a_lookupd_answering_garbage_is_reported_by_name(
    stage: Stage, row: Row, kind: str, says: str, request: pytest.FixtureRequest
) -> None:
    attach_logs(request, stage.log_dirs)
    ns, url = stage.ns, stage.garbage.kind_url(kind)
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
    row.fault = f"lookupd.httpAddresses: [{stage.garbage.kind_url('html')}, <real lookupd>]"
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
    row.fault = (f"worker.image: {MISSING_IMAGE}, pull policy Never; on the real node, the kubelet's own "
                 "ErrImageNeverPull (no registry is asked)")  # fmt: skip
    ns.wait(lambda: ns.deployments("image"), "the Deployment")
    deployment = ns.deployments("image")[stage.nsqd]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == MISSING_IMAGE
    problem = f'ErrImageNeverPull: Container image "{MISSING_IMAGE}" is not present with pull policy of Never'
    said = reported(stage, "image", problem)
    row.see(f"the Deployment was made with the image as given; {said}")
    row.see(healthy_undisturbed(stage))


def reported(stage: Stage, name: str, problem: str) -> str:
    """Wait until the operator tells the kubelet's `problem` of the worker's pod everywhere a user looks,
    and say how it looked."""
    ns = stage.ns
    [pod] = [p["metadata"]["name"] for p in ns.get("pods", "-l", f"nsqoperator.dev/consumer={name}")["items"]]
    expected = f"0 of 1 workers ready for 1 nsqd; nsqd {stage.nsqd}: pod {pod}: {problem}"
    ns.wait(lambda: ns.condition("Ready", name).get("message") == expected, f"{name}: {problem}", timeout=120)
    ready = ns.condition("Ready", name)
    assert (ready["status"], ready["reason"]) == ("False", "WorkersFailing")
    message = ready["message"]
    entry = ns.status(name)["nsqds"][0]
    assert entry["problem"] == f"pod {pod}: {problem}"

    # A real pod may say something else first (a probe failing while it starts): wait for this one.
    def telling() -> list[str]:
        return [e["message"] for e in warning_events(ns, name, "WorkerFailing") if problem in e["message"]]

    ns.wait(telling, f"a WorkerFailing warning saying {problem}")
    event = telling()[0]
    return (
        f"Ready=False WorkersFailing: '{message}'; status.nsqds[0].problem says the same; "
        f"Warning WorkerFailing: '{event}'"
    )


def test_a_worker_no_node_can_fit_is_reported(stage: Stage, row: Row, request: pytest.FixtureRequest) -> None:
    attach_logs(request, stage.log_dirs)
    ns = stage.ns
    row.order, row.section = 4.43, "Bad input"
    row.scenario = "A worker that asks for more CPU than any node has"
    row.load = "one NsqConsumer next to a healthy one; the real node (2 CPUs) and two 32-CPU kwok nodes"
    row.fault = "worker.resources: 64 CPUs (the real kube-scheduler refuses it; nothing is faked)"
    ns.wait(condition_holds(ns, "huge", "Ready", "False", "WorkersFailing"), "huge Ready=False", timeout=60)
    message = ns.condition("Ready", "huge")["message"]
    assert message.startswith(f"0 of 1 workers ready for 1 nsqd; nsqd {stage.nsqd}: pod huge-")
    assert re.search(r"Unschedulable: 0/\d+ nodes are available", message), message
    assert "Insufficient cpu" in message
    ns.wait(lambda: warning_events(ns, "huge", "WorkerFailing"), "a WorkerFailing warning")
    row.see(f"Ready=False WorkersFailing: '{message}'; a WorkerFailing warning event says the same")
    fixed = {"spec": {"worker": {"resources": SMALL}}}
    ns.kubectl("patch", "nsqconsumer", "huge", "--type=merge", "-p", json.dumps(fixed))
    ns.wait(condition_holds(ns, "huge", "Ready", "True", "AllWorkersReady"), "huge Ready=True", timeout=60)
    assert "problem" not in ns.status("huge")["nsqds"][0]
    recovered = [e for e in ns.events("huge") if e["reason"] == "WorkerRecovered"]
    assert recovered, "a WorkerRecovered event"
    assert stage.nsqd in recovered[0]["message"]
    row.see("after the spec asked for 10m CPU: Ready=True AllWorkersReady, the problem gone from the status, "
            f"Normal WorkerRecovered: '{recovered[0]['message']}'")  # fmt: skip
    row.see(healthy_undisturbed(stage))


def test_a_worker_that_exits_at_once_says_why(stage: Stage, row: Row, request: pytest.FixtureRequest) -> None:
    attach_logs(request, stage.log_dirs)
    ns = stage.ns
    row.order, row.section = 4.45, "Bad input"
    row.scenario = "A worker environment variable the worker refuses"
    row.load = "one NsqConsumer next to a healthy one"
    ns.wait(lambda: ns.deployments("crash"), "the Deployment")
    container = ns.deployments("crash")[stage.nsqd]["spec"]["template"]["spec"]["containers"][0]
    # File: only what the worker itself writes to /dev/termination-log reaches the status, never its logs.
    assert container["terminationMessagePolicy"] == "File"
    row.fault = ("worker.env: NSQ_LOG_LEVEL=LOUD; on the real node the worker exits 2 and the kubelet "
                 "restarts it into CrashLoopBackOff; the worker writes the refusal as its termination "
                 "message")  # fmt: skip
    last_words = (
        "nsq-worker: error: --log-level / NSQ_LOG_LEVEL: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR, "
        "CRITICAL"
    )
    row.see(reported(stage, "crash", f"CrashLoopBackOff; last exit code 2: {last_words}"))
    row.see(healthy_undisturbed(stage))


def test_a_deployment_in_the_way_is_reported_and_left_alone(
    stage: Stage, row: Row, request: pytest.FixtureRequest
) -> None:
    attach_logs(request, stage.log_dirs)
    ns = stage.ns
    name = naming.worker_name("squat", stage.nsqd)
    row.order, row.section = 4.47, "Bad input"
    row.scenario = "Someone else's Deployment already has a worker's name"
    row.load = "one NsqConsumer next to a healthy one"
    row.fault = f"a Deployment {name} (not owned by the NsqConsumer) made before the NsqConsumer"
    squatter = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": "squat"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "squat"}},
                 "template": {"metadata": {"labels": {"app": "squat"}},
                              "spec": {"containers": [{"name": "web", "image": "web:1"}]}}},
    }  # fmt: skip
    ns.apply(squatter)
    uid = ns.get("deployment", name)["metadata"]["uid"]
    ns.apply(consumer([stage.lookupd], name="squat", worker={"resources": SMALL}))
    ns.wait(condition_holds(ns, "squat", "Ready", "False", "ReconcileFailed"), "Ready=False", timeout=60)
    message = ns.condition("Ready", "squat")["message"]
    assert f"Deployment {name} already exists and is not controlled by this NsqConsumer" in message
    ns.wait(lambda: warning_events(ns, "squat", "CreateFailed"), "a CreateFailed warning")
    event = warning_events(ns, "squat", "CreateFailed")[0]["message"]
    assert "delete or rename it" in event
    kept = ns.get("deployment", name)
    assert kept["metadata"]["uid"] == uid
    assert kept["metadata"]["labels"] == {"app": "squat"}
    assert not kept["metadata"].get("ownerReferences")
    row.see(f"Ready=False ReconcileFailed: '{message}'; Warning CreateFailed; the other Deployment untouched")
    ns.kubectl("delete", "deployment", name, "--wait=true")
    ns.wait(condition_holds(ns, "squat", "Ready", "True", "AllWorkersReady"), "Ready=True", timeout=60)
    assert manifests.owned_by(ns.get("deployment", name), ns.consumer("squat")["metadata"]["uid"])
    row.see("once it was deleted, the operator made the worker's own: Ready=True AllWorkersReady")
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
    ns.wait(lambda: ns.deployments(which), "the Deployment")
    spec = next(iter(ns.deployments(which).values()))["spec"]["template"]["spec"]
    if which == "tls":
        # A Secret volume: the kubelet cannot mount it, leaves the container in ContainerCreating
        # and says why only in a FailedMount event on the pod.
        assert spec["volumes"][1]["secret"]["secretName"] == secret
        problem = f'FailedMount: MountVolume.SetUp failed for volume "nsq-tls" : secret "{secret}" not found'
        told = "a FailedMount Warning event on the pod, the container left in ContainerCreating"
    else:
        # An environment variable from a Secret: the kubelet refuses to create the container.
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["NSQ_AUTH_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == secret
        assert "value" not in env["NSQ_AUTH_SECRET"]
        problem = f'CreateContainerConfigError: secret "{secret}" not found'
        told = "the container waiting with CreateContainerConfigError in the pod's status"
    row.fault = (f"worker.{which}.secretName: {secret} (no such Secret); on the real node, the kubelet's "
                 f"own state: {told}")  # fmt: skip
    row.see(reported(stage, which, problem))
    row.see(healthy_undisturbed(stage))
    assert not any(c.get("reason") == "InvalidSpec" for c in ns.status(which).get("conditions", [])), (
        "a reference is not a spec error"
    )
