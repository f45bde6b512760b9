"""What happens to messages: finished, requeued with growing delays, given up, async, bounded, touched."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.rig.nsq import NsqCluster
from tests.rig.waiting import wait_for
from tests.rig.workers import WorkerFactory, bodies, channel, settled, topic_depth

ONE_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 1}], indirect=True)


@ONE_NSQD
def test_every_message_is_handled_once_and_finished(nsq_cluster: NsqCluster, workers: WorkerFactory) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    sent = [f"message-{i}".encode() for i in range(300)]
    nsqd.publish("work", sent)
    worker = workers.start(nsqd, max_in_flight=50, concurrency=4)

    stats = wait_for(settled(nsqd, "work", "workers"), what="the channel to drain")
    done = worker.records("done")
    assert sorted(r["body"].encode() for r in done) == sorted(sent)
    assert len({r["id"] for r in done}) == len(sent)
    starts = worker.records("start")
    assert {(r["topic"], r["nsqd"]) for r in starts} == {("work", nsqd.tcp_address)}  # the `reader` argument
    assert (stats["requeue_count"], stats["timeout_count"], stats["message_count"]) == (0, 0, 300)
    assert wait_for(lambda: worker.metric("nsq_worker_messages_finished_total") == 300)
    assert worker.metric("nsq_worker_messages_received_total") == 300
    assert worker.metric("nsq_worker_messages_in_flight") == 0


@ONE_NSQD
def test_a_failing_message_is_requeued_with_a_growing_delay(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies({"fail": 2}))
    worker = workers.start(nsqd, requeue_delay=0.3, backoff_cap=10, max_attempts=5)

    done = wait_for(lambda: worker.records("done"), what="the third attempt to succeed")
    assert done[0]["attempts"] == 3
    starts = worker.records("start")
    assert [r["attempts"] for r in starts] == [1, 2, 3]
    # nsqd holds a requeued message for the delay asked for: 0.3 s after attempt 1, 0.6 s after attempt 2.
    first_gap = starts[1]["t"] - starts[0]["t"]
    second_gap = starts[2]["t"] - starts[1]["t"]
    assert first_gap >= 0.3 * 0.9
    assert second_gap >= 0.6 * 0.9
    stats = wait_for(settled(nsqd, "work", "workers"))
    assert (stats["requeue_count"], stats["timeout_count"]) == (2, 0)
    assert worker.metric("nsq_worker_handler_errors_total") == 2
    assert f'"message_id": "{starts[0]["id"]}"' in worker.log
    assert "requeued with a 0.30s delay" in worker.log


@ONE_NSQD
def test_past_max_attempts_the_give_up_hook_dead_letters_the_body(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.create_topic("work-dead", "inspect")
    nsqd.publish("work", bodies({"fail": 99}, "fine"))
    worker = workers.start(
        nsqd, requeue_delay=0.05, backoff_cap=0, max_attempts=3, dead_letter_topic="work-dead"
    )

    given_up = wait_for(lambda: worker.records("give_up"), what="the give-up hook")
    assert given_up[0]["attempts"] == 3
    assert [r["attempts"] for r in worker.records("fail")] == [1, 2, 3]
    stats = wait_for(settled(nsqd, "work", "workers"))
    assert (stats["requeue_count"], stats["timeout_count"], stats["message_count"]) == (2, 0, 2)
    assert topic_depth(nsqd, "work-dead") == 1
    assert channel(nsqd, "work-dead", "inspect")["depth"] == 1
    assert worker.metric("nsq_worker_messages_given_up_total") == 1
    assert f"giving up on message {given_up[0]['id']}" in worker.log
    assert [r["body"] for r in worker.records("done")] == ["fine"]


def _give_up_lines(log: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if line["message"].startswith("giving up on message")]


@ONE_NSQD
@pytest.mark.parametrize("preview", [None, 20])
def test_the_give_up_log_shows_no_body_unless_a_preview_is_asked_for(
    nsq_cluster: NsqCluster, workers: WorkerFactory, preview: int | None
) -> None:
    """A body may hold what no log should: by default the give-up line has its size only; with
    NSQ_LOG_BODY_PREVIEW=N, its first N bytes and not one more."""
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    body = json.dumps({"fail": 99, "card": "PLANTED-BODY-SECRET-4111"}).encode()
    nsqd.publish("work", [body])
    asked = {} if preview is None else {"NSQ_LOG_BODY_PREVIEW": str(preview)}
    worker = workers.start(nsqd, requeue_delay=0.05, backoff_cap=0, max_attempts=2, **asked)

    given_up = wait_for(lambda: _give_up_lines(worker.log), what="the give-up log line")
    wait_for(settled(nsqd, "work", "workers"), what="the given-up message finished")
    assert [r["attempts"] for r in worker.records("fail")] == [1, 2]  # the handler raised each time
    (line,) = given_up
    assert (line["level"], line["attempts"], line["body_bytes"]) == ("error", 2, len(body))
    assert "PLANTED-BODY-SECRET" not in worker.log  # in no log line at all: failures, give-up, traceback
    if preview is None:
        assert "body" not in line
    else:
        assert line["body"] == body[:preview].decode()  # and not one byte more (no secret above)


@ONE_NSQD
def test_async_messages_are_finished_later_by_the_handler(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies(*[{"async": 1.5}] * 3))
    worker = workers.start(nsqd, concurrency=1)

    wait_for(lambda: len(worker.records("start")) == 3, what="three handlers to return")
    assert channel(nsqd, "work", "workers")["in_flight_count"] == 3  # returned, but not finished yet
    assert worker.metric("nsq_worker_handlers_running") == 0
    wait_for(lambda: len(worker.records("async_done")) == 3, what="the async finishes")
    stats = wait_for(settled(nsqd, "work", "workers"))
    assert (stats["requeue_count"], stats["timeout_count"]) == (0, 0)


@ONE_NSQD
def test_no_more_handlers_run_at_once_than_the_concurrency(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies(*[{"sleep": 0.3}] * 12))
    worker = workers.start(nsqd, concurrency=3, max_in_flight=12)

    wait_for(lambda: len(worker.records("done")) == 12, what="all handlers")
    assert max(r["running"] for r in worker.records("start")) == 3
    stats = wait_for(settled(nsqd, "work", "workers"))
    assert (stats["requeue_count"], stats["timeout_count"]) == (0, 0)


@pytest.mark.parametrize("nsq_cluster", [{"nsqd": 0}], indirect=True)
@pytest.mark.parametrize("touch", [True, False])
def test_touch_keeps_a_slow_handlers_message_alive(
    nsq_cluster: NsqCluster, workers: WorkerFactory, touch: bool
) -> None:
    nsqd = nsq_cluster.add_nsqd(extra_args=["--msg-timeout=2s"])
    # nsqd looks for timed-out messages only in the channels it knew at its last 5-second refresh:
    # create the channel now and hold the message past the first refresh, so the control does time out.
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies({"sleep": 6}))
    worker = workers.start(nsqd, touch=touch, max_in_flight=1)

    wait_for(lambda: worker.records("done"), timeout=20, what="the slow handler")
    if touch:
        stats = wait_for(settled(nsqd, "work", "workers"))
        assert (stats["timeout_count"], stats["requeue_count"]) == (0, 0)
        assert len(worker.records("start")) == 1
        assert worker.metric("nsq_worker_messages_touched_total") >= 2
    else:
        # The control: without TOUCH nsqd gives up on us after 2 s and delivers the message again.
        assert channel(nsqd, "work", "workers")["timeout_count"] >= 1
        assert [r["attempts"] for r in worker.records("start")][:2] == [1, 2]
