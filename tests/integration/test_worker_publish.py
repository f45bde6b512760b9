"""Publishing from a handler: MPUB and DPUB wait for nsqd's answer, and a refusal is a PublishError with
nsqd's reason, counted, without losing the message being handled."""

from __future__ import annotations

import pytest

from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.waiting import wait_for
from tests.rig.workers import NSQ_WORKER_SCRIPT, Worker, WorkerFactory, bodies, settled

ONE_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 0}], indirect=True)


def start_publisher(workers: WorkerFactory, nsqd: Nsqd, **settings: object) -> Worker:
    """`nsq-worker tests.worker_classes.publishing:PublishingWorker` against `nsqd`."""
    argv = [str(NSQ_WORKER_SCRIPT), "tests.worker_classes.publishing:PublishingWorker"]
    return workers.start(nsqd, "work", "workers", argv, **settings)


@ONE_NSQD
def test_mpublish_and_dpublish_reach_the_topic_the_delayed_one_after_its_delay(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.add_nsqd()
    nsqd.create_topic("work", "workers")
    nsqd.create_topic("out", "inspect")
    nsqd.publish("work", bodies({"mpub": ["a", "b", "c"], "dpub": "late", "delay_ms": 2000}))
    worker = start_publisher(workers, nsqd)

    dpublished = wait_for(lambda: worker.records("dpublished"), what="the handler to publish")
    wait_for(settled(nsqd, "work", "workers"), what="the handled message finished")
    assert len(worker.records("mpublished")) == 1
    assert wait_for(lambda: worker.metric("nsq_worker_published_total") == 4)
    assert worker.metric("nsq_worker_publish_errors_total") == 0

    # A real consumer of the target topic sees the three MPUB bodies at once, the DPUB one 2 s later.
    reader = workers.start(nsqd, topic="out", channel="inspect")
    seen = wait_for(lambda: reader.records("done") if len(reader.records("done")) == 4 else None, timeout=20)
    at = {r["body"]: r["t"] for r in seen}
    assert sorted(at) == ["a", "b", "c", "late"]
    published_at = dpublished[0]["t"]
    assert at["late"] - published_at >= 2.0 * 0.9
    assert max(at[b] for b in "abc") < at["late"]


@ONE_NSQD
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("topic", "E_BAD_TOPIC"),
        ("size", "E_BAD_MESSAGE PUB message too big 4096 > 1024"),
        ("mpub-size", "E_BAD_MESSAGE MPUB message too big 4096 > 1024"),
        ("delay", "E_INVALID DPUB timeout 36000000 out of range"),
    ],
)
def test_a_refused_publish_raises_nsqds_reason_and_the_message_is_not_lost(
    nsq_cluster: NsqCluster, workers: WorkerFactory, bad: str, reason: str
) -> None:
    nsqd = nsq_cluster.add_nsqd(extra_args=["--max-msg-size=1024", "--msg-timeout=1s"])
    nsqd.create_topic("work", "workers")
    nsqd.create_topic("out", "inspect")
    nsqd.publish("work", bodies({"bad": bad}))
    worker = start_publisher(workers, nsqd, requeue_delay=0.1, backoff_cap=0, msg_timeout=1)

    refused = wait_for(lambda: worker.records("refused"), what="the refused publish")
    assert reason in refused[0]["error"]
    # The message comes back (requeued, or redelivered by nsqd after the connection it closed) and is done.
    done = wait_for(lambda: worker.records("done"), timeout=30, what="the second attempt")
    assert done[0]["attempts"] == 2
    assert done[0]["id"] == refused[0]["id"]
    wait_for(settled(nsqd, "work", "workers"), timeout=20)
    assert worker.metric("nsq_worker_publish_errors_total") == 1
    assert worker.metric("nsq_worker_published_total") == 0
    assert nsqd.channel_stats("out", "inspect")["depth"] == 0  # MPUB is all or none
    assert reason in worker.log
