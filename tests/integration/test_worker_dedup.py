"""NSQ_DEDUP_WINDOW against a real nsqd: a message redelivered after its msg_timeout, whose first
delivery this process then finished, is finished again without running the handler a second time."""

from __future__ import annotations

import pytest

from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.waiting import wait_for
from tests.rig.workers import NSQ_WORKER_SCRIPT, Worker, WorkerFactory, bodies, settled

NO_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 0}], indirect=True)


def start_holding_worker(workers: WorkerFactory, nsqd: Nsqd, **settings: object) -> Worker:
    """`nsq-worker tests.worker_classes.dedup:HoldingWorker`: one handler at a time, no TOUCH."""
    argv = [str(NSQ_WORKER_SCRIPT), "tests.worker_classes.dedup:HoldingWorker"]
    return workers.start(
        nsqd, "work", "workers", argv, concurrency=1, max_in_flight=10, msg_timeout=1, touch=False, **settings
    )


@NO_NSQD
@pytest.mark.parametrize("window", [100, 0])
def test_a_redelivered_id_finished_here_is_not_handled_twice(
    nsq_cluster: NsqCluster, workers: WorkerFactory, window: int
) -> None:
    nsqd = nsq_cluster.add_nsqd()
    nsqd.create_topic("work", "workers")
    # Both messages are in flight from the same moment, so both time out: the held one in its handler,
    # the other one queued behind it. The first delivery waits until both redeliveries are here.
    nsqd.publish("work", bodies({"hold_until_received": 4}, {"other": 1}))
    worker = start_holding_worker(workers, nsqd, dedup_window=window)

    stats = wait_for(settled(nsqd, "work", "workers"), timeout=30, what="the channel to drain")
    assert stats["timeout_count"] == 2  # nsqd really redelivered both
    assert stats["message_count"] == 2
    assert wait_for(lambda: worker.metric("nsq_worker_messages_received_total") == 4)
    attempts: dict[str, list[int]] = {}
    for record in worker.records("start"):
        attempts.setdefault(record["id"], []).append(record["attempts"])
    assert len(attempts) == 2
    if window:
        assert list(attempts.values()) == [[1], [1]]  # each id handled once, its redelivery not
        assert worker.metric("nsq_worker_duplicates_total") == 2
        for message_id in attempts:
            assert f"message {message_id} was finished by this process before" in worker.log
    else:
        # The control: without the window each redelivery runs the handler a second time.
        assert list(attempts.values()) == [[1, 2], [1, 2]]
        assert worker.metric("nsq_worker_duplicates_total") == 0
