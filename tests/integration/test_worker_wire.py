"""The worker on the wire and at its edges, against a real nsqd unless nsqd cannot make the fault:
messages of many MiB, frames past max_msg_size, a corrupt header, connections dropped after SUB,
teardown() after the handlers, and a subclass that names its attributes like the machinery does."""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.nsq_faults import CuttingProxy, MisbehavingNsqd, Subscription
from tests.rig.waiting import wait_for
from tests.rig.workers import (
    NSQ_WORKER_SCRIPT,
    PROJECT_ROOT,
    Worker,
    WorkerFactory,
    bodies,
    settled,
    topic_depth,
)

NO_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 0}], indirect=True)
MIB = 1024 * 1024
# nsqd refuses PUB bodies above --max-msg-size, and HTTP /mpub bodies above --max-body-size.
BIG_NSQD = ["--max-msg-size=6291456", "--max-body-size=16777216"]


def digest_worker(workers: WorkerFactory, nsqd: Nsqd | None, **settings: object) -> Worker:
    argv = [str(NSQ_WORKER_SCRIPT), "tests.worker_classes.digest:DigestWorker"]
    return workers.start(nsqd, "work", "workers", argv, **settings)


def log_lines(worker: Worker) -> list[dict[str, object]]:
    return [json.loads(line) for line in worker.log.splitlines() if line.startswith("{")]


@NO_NSQD
def test_messages_of_five_mib_arrive_whole(nsq_cluster: NsqCluster, workers: WorkerFactory) -> None:
    nsqd = nsq_cluster.add_nsqd(extra_args=BIG_NSQD)
    nsqd.create_topic("work", "workers")
    sent = [bytes([i]) * (5 * MIB) for i in range(6)] + [b"small"]
    nsqd.publish("work", sent, batch=1)
    worker = digest_worker(workers, nsqd, max_msg_size=6 * MIB, max_in_flight=3)

    stats = wait_for(settled(nsqd, "work", "workers"), timeout=60, what="the channel to drain")
    assert (stats["message_count"], stats["requeue_count"], stats["timeout_count"]) == (7, 0, 0)
    got = sorted((r["bytes"], r["sha256"]) for r in worker.records("done"))
    assert got == sorted((len(b), hashlib.sha256(b).hexdigest()) for b in sent)


@NO_NSQD
def test_a_frame_past_max_msg_size_closes_the_connection_and_nothing_is_lost(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    """nsqd takes 2 MiB bodies, the worker is told 1 MiB: the worker drops the connection with a log
    line that names the setting, nsqd keeps the message, and a worker told the truth handles it."""
    nsqd = nsq_cluster.add_nsqd(extra_args=BIG_NSQD)
    nsqd.create_topic("work", "workers")
    big = b"B" * (2 * MIB)
    nsqd.publish("work", [b"first", big, b"last"], batch=1)
    small = digest_worker(workers, nsqd, max_msg_size=MIB, msg_timeout=2, max_in_flight=10)

    line = wait_for(
        lambda: next((x for x in log_lines(small) if "larger than" in str(x["message"])), None),
        timeout=30,
        what="the worker to refuse the frame",
    )
    assert line["level"] == "error"
    assert "NSQ_MAX_MSG_SIZE" in str(line["message"])
    assert "redelivers" in str(line["message"])
    wait_for(lambda: small.metric("nsq_worker_reconnects_total") >= 1, what="a reconnect")
    small.signal(signal.SIGTERM)
    assert small.wait(30) == 0

    told = digest_worker(workers, nsqd, max_msg_size=2 * MIB, max_in_flight=10)
    stats = wait_for(settled(nsqd, "work", "workers"), timeout=60, what="the channel to drain")
    assert stats["message_count"] == 3
    handled = {r["sha256"] for r in small.records("done") + told.records("done")}
    assert hashlib.sha256(big).hexdigest() in {r["sha256"] for r in told.records("done")}
    assert handled == {hashlib.sha256(b).hexdigest() for b in (b"first", big, b"last")}


def test_a_corrupt_frame_header_is_refused_before_its_frame_is_read(workers: WorkerFactory) -> None:
    """A header announcing a 1 GiB message (2 MiB past max_msg_size would do): the worker closes the
    connection having received 30 bytes, instead of waiting for (and buffering) the gigabyte."""
    header = (1 << 30).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\0" * 22
    server = MisbehavingNsqd(header)
    try:
        worker = workers.start(None, NSQD_TCP_ADDRESS=server.address)
        first = wait_for(closed_first(server), timeout=30, what="the worker to close the corrupt connection")
        assert first.bytes_sent_after_sub == 30
        assert "a frame of 1073741824 bytes is larger than" in worker.log
        wait_for(lambda: len(server.connections) >= 2, timeout=15, what="the worker to connect again")
        status = Path(f"/proc/{worker.popen.pid}/status").read_text()
        rss_kib = int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
        assert rss_kib < 200 * 1024  # nothing like a gigabyte was set aside
        assert worker.get("/healthz").status_code == 200  # a bad peer is no reason to restart
    finally:
        server.stop()


@NO_NSQD
def test_connections_dropped_after_sub_back_off_with_growth_then_consume(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.add_nsqd()
    nsqd.create_topic("work", "workers")
    proxy = CuttingProxy(nsqd.tcp_address, cut_after=0.3)
    try:
        worker = workers.start(None, NSQD_TCP_ADDRESS=proxy.address, heartbeat_interval=1)
        wait_for(lambda: len(proxy.accepted) >= 5, timeout=40, what="five connections")
        proxy.cutting = False
        gaps = [b - a for a, b in zip(proxy.accepted, proxy.accepted[1:5], strict=False)]
        # After the k-th drop in a row the worker waits at least half of 0.5 s * 2**k (jittered above).
        for k, gap in enumerate(gaps):
            assert gap >= 0.25 * 2**k, (k, gaps)
        assert gaps[3] > 2 * gaps[0]
        assert "short-lived in a row" in worker.log

        wait_for(lambda: proxy.kept, timeout=20, what="a connection the proxy keeps")
        nsqd.publish("work", bodies("through the proxy"))
        wait_for(lambda: worker.records("done"), timeout=30, what="a message once the proxy passes")
        assert worker.metric("nsq_worker_reconnects_total") >= 4

        # A connection that stayed up starts the count again: the next drop is retried within ~0.5 s.
        subscribed, connections = proxy.kept[-1], len(proxy.accepted)
        wait_for(
            lambda: len(proxy.accepted) == connections and _age(subscribed) > 11,
            timeout=30,
            what="a connection up for 11 s",
            describe=lambda: [round(t - subscribed, 2) for t in proxy.accepted],
        )
        count = len(proxy.accepted)
        cut_at = time.monotonic()
        proxy.cut_all()
        wait_for(lambda: len(proxy.accepted) > count, timeout=10, what="the reconnect")
        assert proxy.accepted[-1] - cut_at < 3.0  # not the >= 4 s the sixth failure in a row would wait
    finally:
        proxy.stop()


def closed_first(server: MisbehavingNsqd) -> Callable[[], Subscription | None]:
    def check() -> Subscription | None:
        first = server.connections[0] if server.connections else None
        return first if first is not None and first.closed_by_client_at is not None else None

    return check


def _age(since: float) -> float:
    return time.monotonic() - since


def drain_three_sleepers(
    nsq_cluster: NsqCluster, workers: WorkerFactory, tmp: Path, sleep: float, drain_timeout: float
) -> tuple[Worker, Nsqd, str, dict[str, Any]]:
    """Three handlers sleeping `sleep` s, then SIGTERM: the worker, its nsqd, its termination
    message and what its teardown() recorded."""
    nsqd = nsq_cluster.add_nsqd()
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies(*[{"sleep": sleep, "n": i} for i in range(3)]))
    termination = tmp / "termination-log"
    termination.touch()
    argv = [str(NSQ_WORKER_SCRIPT), "tests.worker_classes.slow:SlowWorker"]
    worker = workers.start(
        nsqd, "work", "workers", argv, concurrency=3, drain_timeout=drain_timeout,
        NSQ_TERMINATION_MESSAGE_PATH=termination,
    )  # fmt: skip
    wait_for(lambda: len(worker.records("start")) == 3, what="three handlers running")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    (teardown,) = worker.records("teardown")
    return worker, nsqd, termination.read_text(), teardown


@NO_NSQD
def test_teardown_runs_after_every_handler_has_finished(
    nsq_cluster: NsqCluster, workers: WorkerFactory, tmp_path: Path
) -> None:
    worker, _, termination, teardown = drain_three_sleepers(nsq_cluster, workers, tmp_path, 1.5, 20)
    assert teardown["running"] == 0
    assert all(r["t"] <= teardown["t"] for r in worker.records("done"))
    assert len(worker.records("done")) == 3
    assert "every handler has finished" in worker.log
    assert termination.startswith("drained: 3 finished, 0 requeued")


@NO_NSQD
def test_teardown_waits_for_abandoned_handlers_to_unwind_and_the_messages_come_back(
    nsq_cluster: NsqCluster, workers: WorkerFactory, tmp_path: Path
) -> None:
    worker, nsqd, termination, teardown = drain_three_sleepers(nsq_cluster, workers, tmp_path, 60, 0.5)
    assert teardown["running"] == 0  # killed, and their finally blocks ran first
    assert len(worker.records("unwound")) == 3
    assert all(r["t"] <= teardown["t"] for r in worker.records("unwound"))
    assert not worker.records("done")
    assert "abandoning 3 handlers still running" in worker.log
    assert "drain deadline passed: 3 handlers abandoned" in termination
    wait_for(lambda: nsqd.channel_stats("work", "workers")["depth"] == 3, timeout=10, what="requeued")
    assert nsqd.channel_stats("work", "workers")["requeue_count"] == 3  # back on nsqd at once, nothing lost


@NO_NSQD
def test_a_subclass_that_names_its_attributes_like_the_machinery_still_works(
    nsq_cluster: NsqCluster, workers: WorkerFactory, tmp_path: Path
) -> None:
    nsqd = nsq_cluster.add_nsqd()
    nsqd.create_topic("work", "workers")
    nsqd.create_topic("seen")
    sent = [f"message-{i}".encode() for i in range(50)]
    script = PROJECT_ROOT / "tests" / "worker_classes" / "namespace.py"
    worker = workers.start(nsqd, argv=[sys.executable, str(script)], heartbeat_interval=1, max_in_flight=10)
    worker.wait_ready()
    nsqd.publish("work", sent)

    wait_for(settled(nsqd, "work", "workers"), what="the channel to drain")
    assert sorted(r["body"].encode() for r in worker.records("done")) == sorted(sent)
    assert wait_for(lambda: topic_depth(nsqd, "seen") == 50, what="50 digests published from the handler")
    assert worker.get("/readyz").status_code == 200
    assert worker.get("/healthz").json()["state"] == "subscribed"
    assert worker.metric("nsq_worker_messages_finished_total") == 50
    assert worker.metric("nsq_worker_published_total") == 50
    assert worker.metric("nsq_worker_connected") == 1

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    (teardown,) = worker.records("teardown")
    assert all(value == f"handler:{name}" for name, value in teardown["kept"].items()), teardown["kept"]
    assert '"message": "stopped"' in worker.log
