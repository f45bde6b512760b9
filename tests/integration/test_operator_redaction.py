"""Nothing secret leaves where it is kept: credentials in lookupd URLs are used, and shown nowhere.

A real `nsq-operator run` against the rig's API server and a real nsqlookupd (which ignores basic
auth, so the credentialed URL answers). The planted secrets are searched for in everything the
operator makes visible: the NsqConsumer's status, every event of the namespace, the worker
Deployments, the operator's log and its /metrics; the operator runs with --verbose, and its
successor with --debug (kopf's own debug lines too).
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.integration.operators import Namespace, Operator, consumer, topic_everywhere
from tests.reliability.support import Row
from tests.rig.nsq import NsqCluster
from tests.rig.procs import free_port

pytestmark = pytest.mark.kube

PLANTED = "PLANTED-SECRET"


def _shown(ns: Namespace, operator: Operator) -> dict[str, str]:
    """Everything a user of the cluster (or of the operator's logs and metrics) can read."""
    return {
        "status": json.dumps(ns.status()),
        "events": json.dumps(ns.get("events")),
        "deployments": json.dumps(ns.get("deployments")),
        "log": operator.log_path.read_text(errors="replace"),
        "metrics": requests.get(f"{operator.url}/metrics", timeout=5).text,
    }


def _reconciled(operator: Operator, times: int) -> bool:
    return operator.metrics().get('nsq_operator_reconciles_total{result="ok"}', 0) >= times


def test_lookupd_credentials_are_used_and_never_shown(
    ns: Namespace, nsq_cluster: NsqCluster, row: Row
) -> None:
    row.order, row.section = 5.2, "Operations"
    row.scenario = "Planted secrets searched for wherever a user of the cluster can read"
    row.load = "one NsqConsumer whose 3 lookupd URLs carry planted credentials; the operator with --verbose"
    row.fault = (
        "credentials in lookupd URLs: one real nsqlookupd (which ignores basic auth), one closed port, one "
        "malformed port; the operator restarted with --debug"
    )
    addresses = topic_everywhere(nsq_cluster)
    real = nsq_cluster.lookupd_http_urls[0]
    closed = free_port()
    lookupds = [
        real.replace("http://", f"http://planted-user:{PLANTED}-123@"),  # answers: nsqlookupd ignores auth
        f"http://u:{PLANTED}-456@127.0.0.1:{closed}",  # nothing listens there
        f"http://u:{PLANTED}-789@127.0.0.1:notaport",  # aiohttp's error quotes the whole URL
    ]
    ns.apply(consumer(lookupds))

    # The credentialed lookupd is the only one that answers: the Deployments prove it was asked.
    ns.wait(lambda: sorted(ns.deployments()) == addresses, "a Deployment per nsqd")
    ns.wait_condition("LookupdReachable", "True", "PartiallyReachable")
    ns.wait(lambda: ns.reasons().count("LookupdFailed") == 2, "a LookupdFailed event per failing lookupd")
    ns.wait_condition("Ready", "True", "AllWorkersReady")
    operator = ns.operators[0]
    ns.wait(lambda: _reconciled(operator, 2), "a second reconcile")

    reachable = ns.condition("LookupdReachable")["message"]
    assert reachable.startswith("1 of 3 nsqlookupd answered; ")
    assert f"http://***@127.0.0.1:{closed}: ClientConnectorError" in reachable
    assert "http://***@127.0.0.1:notaport: InvalidUrlClientError: http://***@127.0.0.1:notaport/lookup" in (
        reachable
    )
    failed = sorted(e["message"] for e in ns.events() if e["reason"] == "LookupdFailed")
    assert failed[0].startswith(f"nsqlookupd http://***@127.0.0.1:{closed} failed: ")
    assert failed[1].startswith("nsqlookupd http://***@127.0.0.1:notaport failed: ")
    shown = _shown(ns, operator)
    assert {where: PLANTED in text for where, text in shown.items()} == dict.fromkeys(shown, False)
    row.see(f"the credentialed lookupd was used: a Deployment per nsqd ({len(addresses)}); LookupdReachable "
            f"'{reachable[:120]}...'; {len(failed)} LookupdFailed events naming http://***@...")  # fmt: skip
    row.see(f"{PLANTED} in none of: {', '.join(shown)} (searched after the second reconcile)")
    label = real.replace("http://", "http://***@")
    assert f'nsq_operator_lookupd_polls_total{{lookupd="{label}",result="ok"}}' in shown["metrics"]
    assert f'lookupd="http://***@127.0.0.1:{closed}",result="failed"' in shown["metrics"]

    # A restarted operator finds the failing lookupds in the (redacted) status it left, so it does
    # not announce them again; and shows no secret either, not even in debug logging.
    operator.stop()
    successor = ns.start_operator("--debug")
    ns.wait(lambda: _reconciled(successor, 2), "the successor's second reconcile")
    assert ns.reasons().count("LookupdFailed") == 2
    assert sorted(ns.deployments()) == addresses
    shown = _shown(ns, successor)
    assert {where: PLANTED in text for where, text in shown.items()} == dict.fromkeys(shown, False)
    row.see(
        f"the --debug successor: {PLANTED} in none of {', '.join(shown)}; no LookupdFailed announced again"
    )
