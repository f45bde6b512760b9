"""On the real node: TLS and AUTH for nsqd come from Kubernetes Secrets, mounted by the kubelet.

And when a Secret or an image is missing, the kubelet's own states (not ones a test wrote) reach the
NsqConsumer's status by name.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Images
from tests.e2e.node.support import Operator, apply, channel_empty, consumer, wait_ready_pods
from tests.rig import hostnet
from tests.rig.certs import ec_ca, ec_leaf, nsqd_tls_args
from tests.rig.http import LocalHttpServer
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.workers import clients

NO_NSQD = pytest.mark.parametrize("pod_nsq", [{"nsqd": 0}], indirect=True)
AUTH_SECRET = "pods-may-enter"


def publish_and_drain(kube: KubeCluster, nsqd: Nsqd, topic: str, count: int) -> None:
    nsqd.publish(topic, [json.dumps({"n": n}).encode() for n in range(count)])
    kube.wait_for(channel_empty(nsqd, topic, "pods", count), timeout=60, what="every message handled")


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    """A CA, nsqd's certificate for the bridge gateway, and a client certificate for the worker."""
    directory = tmp_path / "tls"
    directory.mkdir()
    ec_ca(directory, "ca")
    ec_leaf(directory, "ca", "server", f"subjectAltName=IP:{hostnet.GATEWAY}\nextendedKeyUsage=serverAuth\n")
    ec_leaf(directory, "ca", "client", "extendedKeyUsage=clientAuth\n")
    return directory


@NO_NSQD
def test_a_worker_pod_talks_tls_to_nsqd_with_certificates_from_a_secret(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images, tls_files: Path,
) -> None:  # fmt: skip
    nsqd = pod_nsq.add_nsqd(extra_args=nsqd_tls_args(tls_files))
    nsqd.create_topic("tls", "pods")
    kube_cluster.kubectl(
        "create", "secret", "generic", "nsqd-client-tls", "-n", worker_ns,
        f"--from-file=ca.crt={tls_files / 'ca.pem'}", f"--from-file=tls.crt={tls_files / 'client.pem'}",
        f"--from-file=tls.key={tls_files / 'client.key'}",
    )  # fmt: skip
    worker = {"tls": {"secretName": "nsqd-client-tls", "verify": True}}
    apply(kube_cluster, worker_ns, consumer("secure", pod_nsq, "tls", worker=worker))
    wait_ready_pods(kube_cluster, worker_ns, "secure", count=1)
    publish_and_drain(kube_cluster, nsqd, "tls", 200)
    [client] = clients(nsqd, "tls", "pods")
    assert client["tls"] is True
    assert client["tls_version"].startswith("TLS"), client  # nsqd checked the client certificate


def auth_answer(path: str) -> tuple[int, bytes]:
    """nsqd's --auth-http-address protocol: the right secret may subscribe to `auth`."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
    if query.get("secret") != [AUTH_SECRET]:
        return 403, b'{"message": "no"}'
    grant = {"topic": "auth", "channels": [".*"], "permissions": ["subscribe", "publish"]}
    return 200, json.dumps({"ttl": 3600, "identity": "pod-worker", "authorizations": [grant]}).encode()


@NO_NSQD
def test_a_worker_pod_authenticates_with_a_secret_from_a_secret(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images,
) -> None:  # fmt: skip
    with LocalHttpServer(auth_answer) as auth:
        nsqd = pod_nsq.add_nsqd(extra_args=[f"--auth-http-address={auth.url.removeprefix('http://')}"])
        nsqd.create_topic("auth", "pods")
        literal = f"--from-literal=secret={AUTH_SECRET}"
        kube_cluster.kubectl("create", "secret", "generic", "nsqd-auth", "-n", worker_ns, literal)
        worker = {"auth": {"secretName": "nsqd-auth", "key": "secret"}}
        apply(kube_cluster, worker_ns, consumer("authed", pod_nsq, "auth", worker=worker))
        wait_ready_pods(kube_cluster, worker_ns, "authed", count=1)
        publish_and_drain(kube_cluster, nsqd, "auth", 100)
        [client] = clients(nsqd, "auth", "pods")
        assert client["authed"] is True, client
        assert client["auth_identity"] == "pod-worker", client


CASES: dict[str, tuple[dict[str, Any], Callable[[str], bool]]] = {
    # A Secret volume that cannot be mounted: the kubelet says so only in a FailedMount event.
    "missing-tls-secret": (
        {"tls": {"secretName": "no-such-tls", "verify": True}},
        lambda p: "FailedMount" in p and 'secret "no-such-tls" not found' in p,
    ),
    # An env var from a missing Secret: the container cannot even be created.
    "missing-auth-secret": (
        {"auth": {"secretName": "no-such-auth", "key": "secret"}},
        lambda p: 'CreateContainerConfigError: secret "no-such-auth" not found' in p,
    ),
    # No registry is ever asked (pull policy Never): the kubelet refuses an image it does not have.
    "missing-image": (
        {"image": "nsq-operator/no-such-image:1"},
        lambda p: "ErrImageNeverPull" in p and "no-such-image" in p,
    ),
}


@pytest.mark.parametrize("pod_nsq", [{"nsqd": 1}], indirect=True)
@pytest.mark.parametrize("case", list(CASES))
def test_a_missing_secret_or_image_is_reported_by_name_from_the_kubelets_state(
    kube_cluster: KubeCluster, operator_pod: Operator, worker_ns: str, pod_nsq: NsqCluster,
    node_images: Images, case: str,
) -> None:  # fmt: skip
    worker, matches = CASES[case]
    pod_nsq.nsqds[0].create_topic("broken", "pods")
    apply(kube_cluster, worker_ns, consumer("broken", pod_nsq, "broken", worker=worker))
    seen: list[str] = []

    def reported() -> bool:
        status = kube_cluster.get_json("nsqc", "broken", "-n", worker_ns).get("status", {})
        seen[:] = [entry.get("problem") or "" for entry in status.get("nsqds", [])]
        return any(matches(problem) for problem in seen)

    try:
        kube_cluster.wait_for(reported, timeout=90, what=f"the {case} problem in status.nsqds[]")
    except Exception as error:
        raise AssertionError(f"{error}; problems seen: {seen}") from error
    events = kube_cluster.get_json("events", "-n", worker_ns, "--field-selector", "reason=WorkerFailing")
    assert any(matches(e["message"]) for e in events["items"]), [e["message"] for e in events["items"]]
