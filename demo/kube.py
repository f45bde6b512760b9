"""The Kubernetes demo: helm install, an NsqConsumer, and one worker Deployment per nsqd coming and going."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from demo.narrate import say
from tests.rig.helm import CHART, helm
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster
from tests.rig.procs import Process, free_port, http_ok

TOPIC, CHANNEL, CONSUMER, NAMESPACE = "demo", "workers", "demo", "demo"
RELEASE, SYSTEM = "nsq-operator", "nsq-system"


def consumer(lookupds: list[str], grace: float) -> dict[str, Any]:
    return {
        "apiVersion": "nsqoperator.dev/v1alpha1",
        "kind": "NsqConsumer",
        "metadata": {"name": CONSUMER, "namespace": NAMESPACE},
        "spec": {
            "topic": TOPIC,
            "channel": CHANNEL,
            "lookupd": {"httpAddresses": lookupds, "pollIntervalSeconds": 1},
            "nsqdRemovalGraceSeconds": int(grace),
            "worker": {"args": ["nsq_worker.examples:CountingWorker"]},
        },
    }


def show(kube: KubeCluster, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}")
    result = kube.kubectl(*args, check=False)
    print((result.stdout or result.stderr).rstrip())


def show_state(kube: KubeCluster) -> None:
    show(kube, "get", "nsqc", "-n", NAMESPACE)
    show(kube, "get", "deployments", "-n", NAMESPACE, "-l", f"nsqoperator.dev/consumer={CONSUMER}",
         "-L", "nsqoperator.dev/consumer")  # fmt: skip


def deployment_count(kube: KubeCluster) -> int:
    items = kube.get_json("deployments", "-n", NAMESPACE, "-l", f"nsqoperator.dev/consumer={CONSUMER}")[
        "items"
    ]
    return len(items)


def run(short: bool = False) -> int:
    grace = 2.0 if short else 8.0
    root = Path(tempfile.mkdtemp(prefix="nsq-operator-kube-demo-"))
    nsq: NsqCluster | None = None
    kube: KubeCluster | None = None
    operator: Process | None = None
    try:
        say("Starting an NSQ cluster (one nsqlookupd, three nsqd) and a Kubernetes control plane on this\n"
            "    machine: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok with two\n"
            "    fake nodes (real API, real controllers; the nodes run no containers).")  # fmt: skip
        nsq = NsqCluster.start(root / "nsq", nsqd_count=3)
        for nsqd in nsq.nsqds:
            nsqd.create_topic(TOPIC, CHANNEL)
        kube = KubeCluster.start(root / "kube")

        say("helm install: the NsqConsumer CRD, the operator's ServiceAccount and least-privilege RBAC.")
        print(helm("install", RELEASE, str(CHART), "-n", SYSTEM, "--create-namespace", "--wait",
                   kubeconfig=kube.kubeconfig).stdout.strip())  # fmt: skip
        say(
            "kwok's nodes run no containers, so the operator runs here as a process, with the token of\n"
            "    its ServiceAccount (not admin credentials): what it can do is what the chart's RBAC allows."
        )
        token = kube.service_account_kubeconfig(SYSTEM, RELEASE, root / "operator-kubeconfig")
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        operator = Process("operator", [str(Path(sys.executable).parent / "nsq-operator"), "run",
                                        "--all-namespaces", "--liveness", liveness],
                           root / "operator.log", env={"KUBECONFIG": str(token)}).start()  # fmt: skip
        operator.wait_until(http_ok(liveness), timeout=60, what="live")

        say(f"kubectl apply an NsqConsumer for topic {TOPIC!r}: the operator asks nsqlookupd which nsqd\n"
            "    have the topic, and makes one single-CPU worker Deployment per nsqd.")  # fmt: skip
        kube.kubectl("create", "namespace", NAMESPACE)
        kube.kubectl("apply", "-f", "-", input=json.dumps(consumer(nsq.lookupd_http_urls, grace)))
        kube.wait_for(lambda: deployment_count(kube) == 3, timeout=60, what="three worker Deployments")
        time.sleep(2)
        show_state(kube)

        say("A fourth nsqd joins and gets the topic: a fourth Deployment appears.")
        nsq.add_nsqd().create_topic(TOPIC, CHANNEL)
        kube.wait_for(lambda: deployment_count(kube) == 4, timeout=60, what="a fourth Deployment")
        show_state(kube)

        leaving = nsq.nsqds[0]
        say(f"{leaving.name} shuts down. Its Deployment stays for nsqdRemovalGraceSeconds ({grace:g}s),\n"
            "    in case it comes back, then goes.")  # fmt: skip
        leaving.stop()
        kube.wait_for(lambda: deployment_count(kube) == 3, timeout=60 + grace, what="the Deployment to go")
        show_state(kube)
        show(kube, "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={CONSUMER}",
             "--sort-by=.lastTimestamp")  # fmt: skip

        say("kubectl delete the NsqConsumer: Kubernetes' garbage collector removes its Deployments.")
        kube.kubectl("delete", "nsqc", CONSUMER, "-n", NAMESPACE, "--timeout=60s")
        kube.wait_for(lambda: deployment_count(kube) == 0, timeout=60, what="the garbage collector")
        show_state(kube)

        say("helm uninstall: the operator and its RBAC go; the CRD stays (Helm never deletes CRDs).")
        operator.stop()
        print(helm("uninstall", RELEASE, "-n", SYSTEM, kubeconfig=kube.kubeconfig).stdout.strip())
        say("Done: one worker Deployment per nsqd, following the cluster, owned by its NsqConsumer.")
        return 0
    finally:
        if operator is not None:
            operator.stop()
        if kube is not None:
            kube.stop()
        if nsq is not None:
            nsq.stop()
        shutil.rmtree(root, ignore_errors=True)
