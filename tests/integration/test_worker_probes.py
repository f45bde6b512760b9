"""The probes as a kubelet sees them: alive through an nsqd outage and a slow setup(), ready only when
subscribed, and a one-line termination message saying why the worker stopped."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.waiting import wait_for
from tests.rig.workers import NSQ_WORKER_SCRIPT, Worker, WorkerFactory, bodies, clients, settled

ONE_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 1}], indirect=True)
TERMINATION_ENV = "NSQ_TERMINATION_MESSAGE_PATH"


def start_probe_worker(workers: WorkerFactory, cls: str, nsqd: Nsqd, **settings: str) -> Worker:
    """`nsq-worker tests.worker_classes.probes:<cls>` against `nsqd`, with extra settings or variables."""
    return workers.start(
        nsqd, argv=[str(NSQ_WORKER_SCRIPT), f"tests.worker_classes.probes:{cls}"], **settings
    )


def termination_log(tmp_path: Path) -> Path:
    """An empty file, as the kubelet mounts at /dev/termination-log."""
    path = tmp_path / "termination-log"
    path.touch()
    return path


def probe(worker: Worker, path: str) -> tuple[int, dict[str, Any]]:
    response = worker.get(path)
    return response.status_code, response.json()


@ONE_NSQD
def test_an_nsqd_outage_makes_the_worker_unready_but_never_dead(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    worker = workers.start(nsqd, heartbeat_interval=1)
    worker.wait_ready()
    before = [f"before {i}" for i in range(10)]
    nsqd.publish("work", bodies(*before))
    wait_for(lambda: len(worker.records("done")) == 10, what="the first messages")

    nsqd.stop()
    wait_for(lambda: probe(worker, "/readyz")[0] == 503, timeout=5, what="/readyz to fail")
    assert probe(worker, "/readyz")[1]["reason"].startswith(f"not connected to nsqd {nsqd.tcp_address}: ")
    # The old /healthz failed after two missed heartbeats plus a second (3 s here): poll far longer.
    polls, deadline = 0, time.monotonic() + 20
    while time.monotonic() < deadline:
        status, live = probe(worker, "/healthz")
        assert (status, live["ok"]) == (200, True), live
        assert probe(worker, "/readyz")[0] == 503
        polls += 1
        time.sleep(0.2)
    assert polls >= 50
    assert live["last_frame_age"] > 15  # still reported, no longer judged
    _, ready = probe(worker, "/readyz")
    assert "Connection refused" in ready["reason"], ready  # the reconnecting loop's latest error
    assert worker.metric("nsq_worker_connected") == 0
    assert worker.popen.poll() is None

    nsqd.start()  # same ports
    worker.wait_ready(timeout=30)
    after = [f"after {i}" for i in range(50)]
    nsqd.publish("work", bodies(*after))
    wait_for(lambda: len(worker.records("done")) >= 60, what="the messages published after the restart")
    wait_for(settled(nsqd, "work", "workers"))
    assert sorted(r["body"] for r in worker.records("done")) == sorted(before + after)  # each once
    assert worker.metric("nsq_worker_messages_finished_total") == 60
    assert worker.metric("nsq_worker_messages_requeued_total") == 0
    assert worker.metric("nsq_worker_reconnects_total") >= 1


@ONE_NSQD
def test_probes_answer_during_a_slow_setup(nsq_cluster: NsqCluster, workers: WorkerFactory) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    worker = start_probe_worker(workers, "SlowSetupWorker", nsqd, SETUP_SECONDS="3")

    status, ready = wait_for(lambda: probe(worker, "/readyz"), what="the health server")
    _, live = probe(worker, "/healthz")
    assert not worker.records("setup_done")  # so both answers came while setup() ran
    assert (status, ready["reason"]) == (503, "starting: setup() running")
    assert (live["ok"], live["state"]) == (True, "starting")
    assert worker.records("setup_start")
    assert not clients(nsqd, "work", "workers")  # nothing subscribes before setup() is done

    worker.wait_ready(timeout=15)
    assert worker.records("setup_done")
    assert probe(worker, "/healthz")[1]["state"] == "subscribed"
    nsqd.publish("work", bodies("after setup"))
    wait_for(lambda: [r for r in worker.records("done") if r["body"] == "after setup"])


@ONE_NSQD
def test_sigterm_during_setup_drains_once_setup_is_done(
    nsq_cluster: NsqCluster, workers: WorkerFactory, tmp_path: Path
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    last_words = termination_log(tmp_path)
    worker = start_probe_worker(
        workers, "SlowSetupWorker", nsqd, SETUP_SECONDS="2", **{TERMINATION_ENV: str(last_words)}
    )
    wait_for(lambda: probe(worker, "/readyz")[1].get("reason") == "starting: setup() running")

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    events = [r["event"] for r in worker.records()]
    assert events == ["setup_start", "setup_done", "teardown"]  # teardown never overtakes setup
    assert "subscribed to" not in worker.log
    assert re.fullmatch(r"drained: 0 finished, 0 requeued in \d+\.\ds\n", last_words.read_text())


@ONE_NSQD
def test_a_drained_worker_leaves_its_counts_as_termination_message(
    nsq_cluster: NsqCluster, workers: WorkerFactory, tmp_path: Path
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies(*[{"sleep": 1, "card": "4242-secret"}] * 5))
    last_words = termination_log(tmp_path)
    worker = workers.start(nsqd, concurrency=2, max_in_flight=5, **{TERMINATION_ENV: str(last_words)})
    wait_for(lambda: len(worker.records("start")) == 2, what="two handlers to start")
    wait_for(lambda: worker.metric("nsq_worker_messages_received_total") == 5, what="all five to arrive")

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    text = last_words.read_text()
    assert re.fullmatch(r"drained: 2 finished, 3 requeued in \d+\.\ds\n", text), text
    assert "4242" not in text  # never a message body


@ONE_NSQD
def test_a_drain_cut_short_says_so(nsq_cluster: NsqCluster, workers: WorkerFactory, tmp_path: Path) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies(*[{"sleep": 30}] * 3))
    last_words = termination_log(tmp_path)
    worker = workers.start(nsqd, drain_timeout=0.5, **{TERMINATION_ENV: str(last_words)})
    wait_for(lambda: len(worker.records("start")) == 3)

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    text = last_words.read_text()
    assert re.fullmatch(
        r"drain deadline passed: 3 handlers abandoned; 0 finished, 3 requeued in 0\.\ds\n", text
    ), text


@ONE_NSQD
def test_a_failing_setup_says_why_and_exits_1(
    nsq_cluster: NsqCluster, workers: WorkerFactory, tmp_path: Path
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    last_words = termination_log(tmp_path)
    worker = start_probe_worker(workers, "FailingSetupWorker", nsqd, **{TERMINATION_ENV: str(last_words)})
    assert worker.wait(timeout=15) == 1
    assert last_words.read_text() == "setup() failed: ValueError: no model file at /models/orders.bin\n"
    assert "the worker could not start" in worker.log
    assert not clients(nsqd, "work", "workers")


@ONE_NSQD
def test_no_termination_file_is_made_where_none_is_mounted(
    nsq_cluster: NsqCluster, workers: WorkerFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "termination-log"  # its directory exists, the file does not
    worker = start_probe_worker(
        workers, "FailingSetupWorker", nsq_cluster.nsqds[0], **{TERMINATION_ENV: str(missing)}
    )
    assert worker.wait(timeout=15) == 1
    assert "no model file at /models/orders.bin" in worker.log  # it failed, and said so on stderr only
    assert not missing.exists()


@pytest.mark.parametrize("form", ["script", "console"])
def test_a_bad_setting_is_the_termination_message_too(
    workers: WorkerFactory, tmp_path: Path, form: str
) -> None:
    """The operator's pods keep only what the worker writes (terminationMessagePolicy: File), so the
    one reason given on stderr must also reach the termination message."""
    last_words = termination_log(tmp_path)
    command = {
        "script": [sys.executable, str(workers.script)],
        "console": [str(NSQ_WORKER_SCRIPT), "tests.worker_classes.recording:RecordingWorker"],
    }[form]
    env = {
        "NSQ_TOPIC": "work", "NSQ_CHANNEL": "workers", "NSQD_TCP_ADDRESS": "127.0.0.1:4150",
        "NSQ_MAX_IN_FLIGHT": "lots", TERMINATION_ENV: str(last_words),
    }  # fmt: skip
    result = workers.run(command, env=env)
    assert result.returncode == 2
    said = last_words.read_text()
    assert said.startswith(f"{'nsq-worker' if form == 'console' else 'recording.py'}: error: ")
    assert "NSQ_MAX_IN_FLIGHT" in said
    assert "'lots'" in said
    assert said.strip() in result.stderr.splitlines()  # the very line it printed
