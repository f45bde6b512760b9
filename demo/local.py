"""The local demo: three nsqd, local mode with the example worker, a fourth nsqd joins, one leaves."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from demo.narrate import LogFollower, Publisher, say
from tests.rig.nsq import NsqCluster

TOPIC, CHANNEL = "demo", "workers"
STEP_TIMEOUT = 60.0


def run(short: bool = False) -> int:
    step = 2.0 if short else 10.0
    root = Path(tempfile.mkdtemp(prefix="nsq-operator-demo-"))
    say("Starting an NSQ cluster on this machine: one nsqlookupd and three nsqd (real NSQ 1.3.0 binaries).")
    cluster = NsqCluster.start(root, nsqd_count=3)
    controller: subprocess.Popen[bytes] | None = None
    publisher: Publisher | None = None
    try:
        for nsqd in cluster.nsqds:
            nsqd.create_topic(TOPIC, CHANNEL)
        live_nsqds = list(cluster.nsqds)
        publisher = Publisher(live_nsqds, TOPIC, rate=200)
        publisher.start()
        say(f"Publishing about 200 messages a second to topic {TOPIC!r} on every nsqd.")
        say(
            "Starting local mode: one worker process per nsqd, each pinned to one CPU core.\n"
            "    It asks nsqlookupd which nsqd have the topic every second."
        )
        controller = subprocess.Popen([
            str(Path(sys.executable).parent / "nsq-operator"), "local",
            "--lookupd-http-address", cluster.lookupd_http_urls[0], "--topic", TOPIC, "--channel", CHANNEL,
            "--poll-interval", "1", "--removal-grace", str(step / 2), "--drain-timeout", "10",
            "--view", "plain", "--summary-every", str(step / 4), "--log-dir", str(root / "workers"),
            "--", str(Path(sys.executable).parent / "nsq-worker"), "nsq_worker.examples:CountingWorker",
        ], stderr=subprocess.PIPE)  # fmt: skip
        assert controller.stderr is not None
        logs = LogFollower(controller.stderr, sys.stderr)
        logs.start()
        for nsqd in cluster.nsqds:
            logs.wait_for(rf"for nsqd {re.escape(nsqd.tcp_address)} started", STEP_TIMEOUT)
        time.sleep(step)

        say("A fourth nsqd joins the cluster and gets the topic: watch a fourth worker start.")
        joined = cluster.add_nsqd()
        joined.create_topic(TOPIC, CHANNEL)
        live_nsqds.append(joined)
        logs.wait_for(rf"for nsqd {re.escape(joined.tcp_address)} started", STEP_TIMEOUT)
        time.sleep(step)

        leaving = cluster.nsqds[0]
        say(
            f"{leaving.name} ({leaving.tcp_address}) shuts down. Its worker stays for the removal grace "
            f"({step / 2:g}s, in case it comes back), then stops."
        )
        live_nsqds.remove(leaving)
        leaving.stop()
        gone = re.escape(leaving.tcp_address)
        logs.wait_for(rf"for nsqd {gone} stopping: nsqd no longer listed", STEP_TIMEOUT)
        time.sleep(step / 2)

        say("Stopping: SIGTERM to local mode drains every worker (in-flight messages finish) and exits.")
        publisher.stop()
        controller.send_signal(signal.SIGTERM)
        code = controller.wait(30)
        logs.join(5)
        say(f"Local mode exited with status {code}. {publisher.sent} messages were published.")
        say(
            "That was it: one worker per nsqd, following the cluster. `make demo-kube` shows the same "
            "on Kubernetes."
        )
        return code
    finally:
        if publisher is not None:
            publisher.stop()
        if controller is not None and controller.poll() is None:
            controller.kill()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
