"""`helm upgrade` from the previous chart, with live consumers on the real node (issue 16 item 1).

The previous release is a git worktree of commit 13b6860 (chart 0.1.0), built and installed as a
Helm user would have it: its operator image built from that tree with the rig's Docker engine and
loaded into the node, its chart installed by the real helm, its CRD from the chart's `crds/` folder.

Why 13b6860 and not bf33eab^ (the commit just before the CRD moved into templates/): bf33eab^ ships
byte for byte the CRD of today, so an upgrade from it could not show a field the old CRD prunes and
the new one keeps. 13b6860 is the last commit whose CRD lacks `spec.autoscaling`, and its chart has
the same layout (0.1.0, CRD in `crds/`, which Helm installs once and never upgrades), so the upgrade
from it is the hard case: a new field, a CRD Helm does not own yet, an older operator, live workers.
`previous_chart()` checks all of that and fails the test with the reason if it stops being true.

The module runs on a control plane of its own, so the previous chart installs its CRD into a cluster
that has none (the session's gets the current CRD from earlier tests, and Helm would skip `crds/`).

What the test asserts:
1. Under the previous chart, `spec.autoscaling` is refused by strict field validation and silently
   pruned without it (the bug Helm users hit).
2. `helm upgrade` to the current chart without `--take-ownership` is refused and changes nothing;
   with it the CRD becomes Helm's, keeps `spec.autoscaling` (read back), no NsqConsumer or Deployment
   is lost or recreated, a worker pod is replaced if and only if its Deployment's pod template
   changed (the new operator may well change templates, and roll them out gradually), every worker
   ends Ready, and every message published before, during and after the upgrade is consumed.
3. A second `helm upgrade` that changes only the operator's own pod (an annotation) replaces the
   operator pods and no worker pod: same pod uids, same Deployment generations, no new ReplicaSet,
   after the new leader reconciled every NsqConsumer at least twice.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nsq_operator import manifests
from nsq_operator import spec as consumer_spec
from tests.conftest import Images
from tests.e2e.node.support import (
    OPERATOR_RELEASE,
    Operator,
    apply,
    channel_empty,
    consumer,
    node_values,
    publish,
    ready,
    restricted_namespace,
    team_namespace,
    wait_ready_pods,
)
from tests.e2e.node.upgrade_support import (
    CRD_NAME,
    Api,
    Publisher,
    Worker,
    crd_spec_fields,
    operator_metric,
    previous_chart,
    rolled_out,
    wait,
    workers,
    worktree,
)
from tests.reliability.support import Row
from tests.rig import docker
from tests.rig.helm import CHART, helm
from tests.rig.kube import KubeCluster
from tests.rig.node import RealNode
from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.reporting import attach_logs

PREVIOUS_COMMIT = "13b6860"  # chart 0.1.0; the last CRD without spec.autoscaling (see the docstring)
NEW_FIELD = "autoscaling"
AUTOSCALING = {"enabled": True, "minReplicas": 1, "maxReplicas": 1}  # on, and the count stays 1
CONSUMERS = ("alpha", "beta", "gamma")
TOPIC = "upgrade"
# Six workers and two operator pods on the node's 2 CPUs, with room for a rollout.
WORKER_RESOURCES = {
    "requests": {"cpu": "150m", "memory": "128Mi"},
    "limits": {"cpu": "150m", "memory": "128Mi"},
}
HELM_TIMEOUT = "300s"


@pytest.fixture(scope="module")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """This module's own control plane (the real node joins it): one where no CRD exists yet."""
    cluster = KubeCluster.start(tmp_path_factory.mktemp("kube-upgrade"))
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass(frozen=True)
class Previous:
    commit: str
    chart: Path
    image_tag: str


@pytest.fixture(scope="module")
def previous(docker_engine: str, real_node: RealNode) -> Iterator[Previous]:
    """The previous release: its chart in a git worktree and its operator image on the node."""
    with worktree(PREVIOUS_COMMIT) as tree:
        chart = previous_chart(tree, NEW_FIELD)
        tag = f"prev-{PREVIOUS_COMMIT}"
        image = docker.build_image("operator", f"nsq-operator/operator:{tag}", docker_engine, tree)
        try:
            real_node.load_images(image)
            yield Previous(PREVIOUS_COMMIT, chart, tag)
        finally:  # 280 MB in each store; the build cache keeps the layers a rerun needs
            real_node.ctr("images", "rm", f"docker.io/{image}", check=False)
            docker.docker("rmi", image, check=False)


@pytest.fixture
def release_ns(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """The operator's namespace, enforcing `restricted` Pod Security; the release uninstalled afterwards."""
    name = restricted_namespace(kube_cluster, f"nsq-system-{uuid.uuid4().hex[:6]}")
    attach_logs(request, [kube_cluster.log_dir, Path("/var/lib/nsq-operator-rig/logs")])
    try:
        yield name
    finally:
        log = kube_cluster.log_dir / f"operator-pods-{name}.log"
        log.write_text(kube_cluster.kubectl(
            "logs", "-n", name, "-l", f"app.kubernetes.io/instance={OPERATOR_RELEASE}", "--tail=400",
            "--prefix", check=False,
        ).stdout)  # fmt: skip
        helm(
            "uninstall",
            OPERATOR_RELEASE,
            "-n",
            name,
            "--wait",
            kubeconfig=kube_cluster.kubeconfig,
            check=False,
        )
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def team_ns(kube_cluster: KubeCluster) -> Iterator[str]:
    """The namespace of the NsqConsumers (restricted Pod Security, as a team's would be)."""
    with team_namespace(kube_cluster) as name:
        yield name


def chart_values(worker_image: str, tag: str, *extra: str) -> list[str]:
    return [*node_values(worker_image), "--set", f"image.tag={tag}", *extra]


def release_status(kube: KubeCluster, namespace: str) -> dict[str, Any]:
    out = helm("status", OPERATOR_RELEASE, "-n", namespace, "-o", "json", kubeconfig=kube.kubeconfig).stdout
    status: dict[str, Any] = json.loads(out)
    return status


CRD_KIND = "kind: CustomResourceDefinition"


def dry_run(kube: KubeCluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`helm upgrade --dry-run=server` to the current chart: what it would render, changing nothing."""
    return helm(
        "upgrade", OPERATOR_RELEASE, str(CHART), "-n", namespace, "--take-ownership", "--dry-run=server",
        *args, kubeconfig=kube.kubeconfig, check=False,
    )  # fmt: skip


def refusal(stderr: str) -> str:
    """What helm's error says, short: the value the old release's values lack, or its last line."""
    nil = re.search(r"at <(\.Values[^>]*)>: nil pointer", stderr)
    return f"{nil.group(1)} is nil" if nil else (stderr.strip().splitlines() or [""])[-1][:200]


def operator_settled(operator: Operator, tag: str) -> bool:
    """Two Ready operator pods, all of the image `tag`, and one of them holding the Lease."""
    pods = operator.pods()
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    names = {p["metadata"]["name"] for p in pods}
    return (
        len(pods) == 2 and all(ready(p) for p in pods) and images == {f"nsq-operator/operator:{tag}"}
        and operator.holder() in names
    )  # fmt: skip


def expected_hashes(kube: KubeCluster, namespace: str) -> dict[str, str]:
    """The spec-hash each worker Deployment should carry under the current operator (its own pure
    `manifests.fingerprint`), by Deployment name."""
    expected = {}
    for item in kube.get_json("nsqc", "-n", namespace)["items"]:
        meta = item["metadata"]
        parsed = consumer_spec.parse(item["spec"])
        assert isinstance(parsed, consumer_spec.ConsumerSpec), parsed
        owner = manifests.Owner(meta["name"], namespace, meta["uid"])
        for d in kube.get_json(
            "deployments", "-n", namespace, "-l", f"nsqoperator.dev/consumer={meta['name']}"
        )["items"]:
            address = d["metadata"]["annotations"]["nsqoperator.dev/nsqd-address"]
            expected[d["metadata"]["name"]] = manifests.fingerprint(owner, parsed, address)
    return expected


def wait_converged(kube: KubeCluster, namespace: str, count: int, timeout: float) -> dict[str, Worker]:
    """Wait until the current operator has made every worker what it renders (spec-hash), every rollout
    is complete and every worker pod Ready: the end of an upgrade, however gradual."""
    found: dict[str, Worker] = {}

    def done() -> bool:
        nonlocal found
        found = workers(kube, namespace)
        expected = expected_hashes(kube, namespace)
        return (
            len(found) == count
            and {name: w.spec_hash for name, w in found.items()} == expected
            and not rolled_out(kube, namespace)
            and all(len(w.pods) == 1 and all(w.pods.values()) for w in found.values())
        )

    def describe() -> object:
        return {
            "hashes": {n: w.spec_hash for n, w in found.items()},
            "expected": expected_hashes(kube, namespace),
            "rollouts": rolled_out(kube, namespace),
            "pods": {n: w.pods for n, w in found.items()},
        }

    wait(kube, done, timeout, "the workers converged to the current operator's Deployments", describe)
    return found


def stats_of(nsqd: Nsqd, channel: str) -> Callable[[], dict[str, int]]:
    return lambda: nsqd.channel_stats(TOPIC, channel)


def drained(nsq: NsqCluster, channels: list[str], published: dict[str, int], timeout: float,
            kube: KubeCluster) -> dict[str, int]:  # fmt: skip
    """Wait until every channel of every nsqd holds nothing and took every message; nsqd's counters."""
    for nsqd in nsq.nsqds:
        for channel in channels:
            check = channel_empty(nsqd, TOPIC, channel, published[nsqd.tcp_address])
            wait(kube, check, timeout, f"{nsqd.name}/{channel} drained", stats_of(nsqd, channel))
    totals = {"message_count": 0, "requeue_count": 0, "timeout_count": 0}
    for nsqd in nsq.nsqds:
        for channel in channels:
            stats = nsqd.channel_stats(TOPIC, channel)
            for key in totals:
                totals[key] += stats.get(key, 0)
    return totals


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("pod_nsq", [{"nsqd": 2}], indirect=True)
def test_helm_upgrade_from_the_previous_chart_with_live_consumers(
    kube_cluster: KubeCluster, real_node: RealNode, node_images: Images, previous: Previous,
    pod_nsq: NsqCluster, release_ns: str, team_ns: str, row: Row,
) -> None:  # fmt: skip
    kube, api = kube_cluster, Api(kube_cluster)
    operator = Operator(kube, release_ns)
    channels = [f"ch-{name}" for name in CONSUMERS]
    published = {n.tcp_address: 0 for n in pod_nsq.nsqds}
    count = len(CONSUMERS) * len(pod_nsq.nsqds)
    row.order, row.section = 5.1, "Operations"
    row.scenario = (
        "helm upgrade with live consumers: chart 0.1.0 (CRD in crds/, older operator) to the current chart, "
        "then an upgrade changing only the operator's pod"
    )
    row.load = (
        f"{len(CONSUMERS)} NsqConsumers x {len(pod_nsq.nsqds)} nsqd = {count} worker pods on the real node "
        "(150m CPU each) and 2 operator pods; 10 messages a second to each nsqd through the upgrade"
    )
    row.fault = (
        f"helm install of {PREVIOUS_COMMIT} from a git worktree (its own operator image); helm upgrade "
        "--take-ownership to the current chart and operator image; helm upgrade again with only "
        "podAnnotations changed"
    )
    # -- the previous release, with consumers ------------------------------------------------------
    helm(
        "install", OPERATOR_RELEASE, str(previous.chart), "-n", release_ns, "--wait",
        f"--timeout={HELM_TIMEOUT}", *chart_values(node_images.worker, previous.image_tag),
        kubeconfig=kube.kubeconfig,
    )  # fmt: skip
    wait(kube, lambda: operator_settled(operator, previous.image_tag), 120,
         "the previous operator leading", operator.pods)  # fmt: skip
    crd = kube.get_json("crd", CRD_NAME)
    assert NEW_FIELD not in crd_spec_fields(crd)
    assert "meta.helm.sh/release-name" not in (crd["metadata"].get("annotations") or {})  # not Helm's

    for nsqd in pod_nsq.nsqds:
        for channel in channels:
            nsqd.create_topic(TOPIC, channel)
    worker = {"image": node_images.worker, "resources": WORKER_RESOURCES}
    for name, channel in zip(CONSUMERS, channels, strict=True):
        apply(kube, team_ns, consumer(name, pod_nsq, TOPIC, channel=channel, worker=worker))
    for name in CONSUMERS:
        wait_ready_pods(kube, team_ns, name, count=len(pod_nsq.nsqds), timeout=300)

    # The bug being fixed: the previous CRD refuses the new field, or prunes it without a word.
    patch = {"spec": {NEW_FIELD: AUTOSCALING}}
    strict = api.merge_patch(team_ns, CONSUMERS[0], patch, "Strict")
    assert strict.status_code >= 400, strict.text
    assert f'unknown field "spec.{NEW_FIELD}"' in strict.json()["message"], strict.text[-500:]
    ignored = api.merge_patch(team_ns, CONSUMERS[0], patch, "Ignore")
    assert ignored.status_code == 200, ignored.text
    assert NEW_FIELD not in kube.get_json("nsqc", CONSUMERS[0], "-n", team_ns)["spec"]

    for nsqd in pod_nsq.nsqds:
        publish(nsqd, TOPIC, 0, 100)
        published[nsqd.tcp_address] += 100
    drained(pod_nsq, channels, published, 120, kube)

    consumers_before = {
        i["metadata"]["name"]: i["metadata"]["uid"] for i in kube.get_json("nsqc", "-n", team_ns)["items"]
    }
    before = workers(kube, team_ns)
    assert len(before) == count, before
    assert all(len(w.pods) == 1 for w in before.values()), before
    operator_pods_before = {p["metadata"]["uid"] for p in operator.pods()}

    # -- the upgrade, while messages flow ----------------------------------------------------------
    publisher = Publisher(pod_nsq.nsqds, TOPIC, batch=5, every=0.5)
    publisher.start()
    upgrade_started = time.monotonic()
    try:
        # --reuse-values keeps the previous chart's values, which have no crds.*: the CRD is not
        # rendered (or the values are refused), so it would stay the pruning one. The ways that work
        # are a values file or --reset-then-reuse-values (the new chart's defaults, then yours).
        reused = dry_run(kube, release_ns, "--reuse-values", "--set", "image.tag=test")
        assert reused.returncode != 0 or CRD_KIND not in reused.stdout, reused.stdout[-2000:]
        reset = dry_run(kube, release_ns, "--reset-then-reuse-values", "--set", "image.tag=test")
        assert reset.returncode == 0, reset.stderr
        assert CRD_KIND in reset.stdout, reset.stdout[-2000:]
        row.see(
            "--reuse-values would leave the old CRD: "
            + (f"helm refused it ({refusal(reused.stderr)})" if reused.returncode else "no CRD rendered")
            + "; --reset-then-reuse-values renders it"
        )

        refused = helm(
            "upgrade", OPERATOR_RELEASE, str(CHART), "-n", release_ns, "--wait",
            f"--timeout={HELM_TIMEOUT}", *chart_values(node_images.worker, "test"),
            kubeconfig=kube.kubeconfig, check=False,
        )  # fmt: skip
        assert refused.returncode != 0, refused.stdout
        assert "invalid ownership metadata" in refused.stdout + refused.stderr, refused.stderr
        assert release_status(kube, release_ns)["version"] == 1  # nothing recorded, nothing changed
        assert {p["metadata"]["uid"] for p in operator.pods()} == operator_pods_before
        row.see(
            "helm upgrade without --take-ownership refused ('invalid ownership metadata' on the CRD from "
            "crds/) and changed nothing: release revision 1, the same operator pods"
        )

        helm(
            "upgrade", OPERATOR_RELEASE, str(CHART), "-n", release_ns, "--take-ownership", "--wait",
            f"--timeout={HELM_TIMEOUT}", *chart_values(node_images.worker, "test"),
            kubeconfig=kube.kubeconfig,
        )  # fmt: skip
        wait(kube, lambda: operator_settled(operator, "test"), 180, "the current operator leading",
             operator.pods)  # fmt: skip
        after = wait_converged(kube, team_ns, count, timeout=420)
        converged_after = time.monotonic() - upgrade_started
    finally:
        live = publisher.stop()
    for address, sent in live.items():
        published[address] += sent

    # The CRD is Helm's now, and has the new field.
    crd = kube.get_json("crd", CRD_NAME)
    annotations = crd["metadata"].get("annotations") or {}
    assert annotations.get("meta.helm.sh/release-name") == OPERATOR_RELEASE, annotations
    assert annotations.get("meta.helm.sh/release-namespace") == release_ns, annotations
    assert annotations.get("helm.sh/resource-policy") == "keep", annotations
    assert NEW_FIELD in crd_spec_fields(crd)
    assert release_status(kube, release_ns)["info"]["status"] == "deployed"

    # Nothing lost or recreated.
    consumers_after = {
        i["metadata"]["name"]: i["metadata"]["uid"] for i in kube.get_json("nsqc", "-n", team_ns)["items"]
    }
    assert consumers_after == consumers_before
    assert {n: w.uid for n, w in after.items()} == {n: w.uid for n, w in before.items()}

    # A worker pod is replaced if and only if its Deployment's pod template changed.
    changed = sorted(n for n in before if before[n].template != after[n].template)
    replaced = sorted(n for n in before if set(after[n].pods) != set(before[n].pods))
    assert replaced == changed, {"template changed": changed, "pods replaced": replaced}
    for name in changed:  # a replaced pod is a new one, not one that lived through
        assert not set(after[name].pods) & set(before[name].pods), name
    row.see(
        f"CRD now Helm's (release annotations, resource-policy keep) with spec.{NEW_FIELD}; "
        f"{len(consumers_after)} of {len(consumers_before)} NsqConsumers and {len(after)} of "
        f"{len(before)} Deployments kept their uid"
    )
    row.see(
        f"pod templates the new operator changed: {len(changed)} of {count}; pods replaced: exactly "
        f"those ({len(replaced)}), the other {count - len(replaced)} kept their uid; every worker Ready "
        f"and on the new operator's spec-hash {converged_after:.0f} s after the upgrade began"
    )

    # The new field is accepted and kept now.
    accepted = api.merge_patch(team_ns, CONSUMERS[0], patch, "Strict")
    assert accepted.status_code == 200, accepted.text
    kept = kube.get_json("nsqc", CONSUMERS[0], "-n", team_ns)["spec"].get(NEW_FIELD)
    assert kept is not None, "spec.autoscaling pruned after the upgrade"
    assert AUTOSCALING.items() <= kept.items(), kept  # with the new CRD's defaults besides
    row.see(
        f"spec.{NEW_FIELD} refused ('unknown field') and pruned silently (fieldValidation=Ignore) under "
        f"chart 0.1.0; accepted and read back after the upgrade"
    )

    # The workers keep consuming: everything published before, during and after.
    for nsqd in pod_nsq.nsqds:
        publish(nsqd, TOPIC, 1000, 200)
        published[nsqd.tcp_address] += 200
    totals = drained(pod_nsq, channels, published, 180, kube)
    sent = sum(published.values()) * len(channels)
    assert totals["message_count"] == sent, (totals, sent)  # every message reached every channel...
    # duplicates are not counted here (the worker keeps no record): nsqd's redeliveries are in the row
    row.published, row.handled, row.lost = sent, totals["message_count"], sent - totals["message_count"]
    row.see(
        f"every channel drained (depth, in flight, deferred 0: each message FINed); "
        f"{sum(live.values())} per channel published during the upgrade; redeliveries requeue_count="
        f"{totals['requeue_count']}, timeout_count={totals['timeout_count']}; the publisher was refused "
        f"{publisher.refused} times"
    )

    # -- a second upgrade that changes only the operator's pod --------------------------------------
    settled = wait_converged(kube, team_ns, count, timeout=180)  # after the autoscaling patch
    replica_sets = {r["metadata"]["uid"] for r in kube.get_json("replicasets", "-n", team_ns)["items"]}
    operator_pods = {p["metadata"]["uid"] for p in operator.pods()}
    helm(
        "upgrade", OPERATOR_RELEASE, str(CHART), "-n", release_ns, "--wait", f"--timeout={HELM_TIMEOUT}",
        *chart_values(node_images.worker, "test", "--set", "podAnnotations.upgrade-check=second"),
        kubeconfig=kube.kubeconfig,
    )  # fmt: skip
    wait(kube, lambda: operator_settled(operator, "test") and not operator_pods & {
        p["metadata"]["uid"] for p in operator.pods()}, 180, "two new operator pods, one leading",
        operator.pods)  # fmt: skip
    annotations = operator.pod()["metadata"].get("annotations") or {}
    assert annotations.get("upgrade-check") == "second", annotations

    def reconciled_each_twice() -> bool:
        done = operator_metric(operator.pod(), 'nsq_operator_reconciles_total{result="ok"}')
        return done >= 2 * len(CONSUMERS)

    wait(kube, reconciled_each_twice, 120, "the new leader reconciling every NsqConsumer twice")
    final = wait_converged(kube, team_ns, count, timeout=60)
    assert {n: (w.uid, w.generation, set(w.pods)) for n, w in final.items()} == {
        n: (w.uid, w.generation, set(w.pods)) for n, w in settled.items()
    }
    assert {
        r["metadata"]["uid"] for r in kube.get_json("replicasets", "-n", team_ns)["items"]
    } == replica_sets
    row.see(
        f"second upgrade (a pod annotation of the operator): both operator pods replaced, the new leader "
        f"reconciled every NsqConsumer at least twice; 0 of {count} worker pods restarted, Deployment "
        f"generations and ReplicaSets unchanged"
    )
