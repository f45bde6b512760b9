"""Shutdown on signals, health and metrics, and surviving an nsqd restart."""

from __future__ import annotations

import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.rig.nsq import NsqCluster
from tests.rig.waiting import wait_for
from tests.rig.workers import WorkerFactory, bodies, channel, clients, settled

ONE_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 1}], indirect=True)


@ONE_NSQD
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_running_handlers_and_exits_0(
    nsq_cluster: NsqCluster, workers: WorkerFactory, signum: int
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies(*[{"sleep": 2}] * 4, *["waiting"] * 6))
    worker = workers.start(nsqd, concurrency=4, max_in_flight=10)
    wait_for(lambda: len(worker.records("start")) == 4, what="four handlers to start")

    worker.signal(signum)
    wait_for(
        lambda: worker.get("/readyz").status_code == 503, timeout=1, what="/readyz to fail while draining"
    )
    assert worker.get("/healthz").status_code == 200
    assert worker.wait(timeout=10) == 0

    assert len(worker.records("done")) == 4  # every running handler finished...
    stats = channel(nsqd, "work", "workers")
    assert stats["in_flight_count"] == 0
    assert stats["timeout_count"] == 0
    assert stats["depth"] == 6  # ...and the six that never started went back to nsqd at once
    assert stats["requeue_count"] == 6
    assert not clients(nsqd, "work", "workers")
    assert "draining" in worker.log


@ONE_NSQD
def test_handlers_still_running_at_the_drain_timeout_are_requeued(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies(*[{"sleep": 30}] * 3))
    worker = workers.start(nsqd, drain_timeout=0.5)
    wait_for(lambda: len(worker.records("start")) == 3)

    worker.signal()
    assert worker.wait(timeout=10) == 0
    stats = channel(nsqd, "work", "workers")
    assert (stats["in_flight_count"], stats["timeout_count"]) == (0, 0)
    assert (stats["depth"], stats["requeue_count"]) == (3, 3)
    assert "requeueing 3 messages" in worker.log


@ONE_NSQD
def test_a_second_signal_exits_at_once(nsq_cluster: NsqCluster, workers: WorkerFactory) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies({"sleep": 60}))
    worker = workers.start(nsqd, drain_timeout=60)
    wait_for(lambda: worker.records("start"))

    worker.signal(signal.SIGTERM)
    wait_for(lambda: worker.get("/readyz").status_code == 503)
    started = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=5) == 128 + signal.SIGINT
    assert time.monotonic() - started < 5
    assert "second SIGINT" in worker.log
    # Not lost: the message is still in flight at nsqd, which redelivers it after its timeout.
    assert channel(nsqd, "work", "workers")["message_count"] == 1


@ONE_NSQD
def test_health_readiness_and_metrics_follow_the_nsqd_connection(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    worker = workers.start(nsqd, heartbeat_interval=1)
    worker.wait_ready()
    nsqd.publish("work", bodies("a", "b", {"fail": 1}))
    wait_for(settled(nsqd, "work", "workers"))

    health = worker.get("/healthz")
    assert health.status_code == 200
    assert health.json()["ok"] is True
    assert health.json()["state"] == "subscribed"
    metrics = worker.get("/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    labels = {"topic": "work", "channel": "workers", "nsqd": nsqd.tcp_address}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
    }
    for name, extra, value in [
        ("nsq_worker_messages_received_total", {}, 4),
        ("nsq_worker_messages_finished_total", {}, 3),
        ("nsq_worker_messages_requeued_total", {}, 1),
        ("nsq_worker_messages_given_up_total", {}, 0),
        ("nsq_worker_messages_in_flight", {}, 0),
        ("nsq_worker_handler_duration_seconds_count", {}, 4),
        ("nsq_worker_connection_state", {"state": "subscribed"}, 1),
        ("nsq_worker_connected", {}, 1),
    ]:
        assert samples[(name, tuple(sorted({**labels, **extra}.items())))] == value, name
    openmetrics = worker.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    assert worker.get("/nope").status_code == 404

    # nsqd goes away: not ready at once, but alive (restarting would not bring nsqd back).
    nsqd.stop()
    wait_for(lambda: worker.get("/readyz").status_code == 503, timeout=5, what="/readyz to fail")
    assert worker.get("/healthz").status_code == 200
    assert worker.metric("nsq_worker_connected") == 0

    # nsqd is back: the worker reconnects by itself and consumes again.
    nsqd.start()
    worker.wait_ready(timeout=30)
    assert worker.get("/healthz").status_code == 200
    nsqd.publish("work", bodies("after the restart"))
    wait_for(lambda: any(r["body"] == "after the restart" for r in worker.records("done")))
    assert worker.metric("nsq_worker_reconnects_total") >= 1


@ONE_NSQD
def test_health_port_0_turns_the_server_off(nsq_cluster: NsqCluster, workers: WorkerFactory) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    worker = workers.start(nsqd, health_port=0)
    wait_for(lambda: clients(nsqd, "work", "workers"), what="the worker to subscribe")
    assert "health and metrics on" not in worker.log
    worker.signal()
    assert worker.wait(timeout=10) == 0
