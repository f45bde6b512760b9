"""preprocess_message and validate_message against a real nsqd: the body replaced before the handler,
invalid messages finished unhandled, and a raising hook failing the message like a handler (never lost)."""

from __future__ import annotations

import base64
import json

import pytest

from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.waiting import wait_for
from tests.rig.workers import NSQ_WORKER_SCRIPT, Worker, WorkerFactory, bodies, settled

ONE_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 1}], indirect=True)


def start_hook_worker(workers: WorkerFactory, nsqd: Nsqd, **settings: object) -> Worker:
    """`nsq-worker tests.worker_classes.hooks:HookWorker` against `nsqd`."""
    argv = [str(NSQ_WORKER_SCRIPT), "tests.worker_classes.hooks:HookWorker"]
    return workers.start(nsqd, "work", "workers", argv, **settings)


@ONE_NSQD
def test_preprocess_replaces_the_body_and_an_invalid_message_is_finished_unhandled(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    encoded = b"b64:" + base64.b64encode(b"decoded hello")
    nsqd.publish("work", [encoded, b"plain", b"invalid"])
    worker = start_hook_worker(workers, nsqd)

    stats = wait_for(settled(nsqd, "work", "workers"), what="the channel to drain")
    assert (stats["message_count"], stats["requeue_count"], stats["timeout_count"]) == (3, 0, 0)
    assert len(worker.records("preprocess")) == 3
    assert sorted(r["body"] for r in worker.records("done")) == ["decoded hello", "plain"]
    assert "invalid" not in [r["body"] for r in worker.records("start")]  # the handler never saw it
    assert wait_for(lambda: worker.metric("nsq_worker_messages_finished_total") == 3)
    assert worker.metric("nsq_worker_invalid_total") == 1
    assert worker.metric("nsq_worker_handler_errors_total") == 0
    (invalid,) = [r for r in worker.records("preprocess") if r["body"] == "invalid"]
    lines = [json.loads(line) for line in worker.log.splitlines() if line.startswith("{")]
    (line,) = [
        line for line in lines if line["message"].endswith("is not valid: finished without handling it")
    ]
    assert (line["level"], line["message_id"]) == ("info", invalid["id"])


@ONE_NSQD
def test_a_raising_hook_requeues_and_then_gives_up_like_a_failing_handler(
    nsq_cluster: NsqCluster, workers: WorkerFactory
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies({"pre_fail": 1}, {"validate_fail": 99}))
    worker = start_hook_worker(workers, nsqd, requeue_delay=0.05, backoff_cap=0, max_attempts=3)

    given_up = wait_for(lambda: worker.records("give_up"), what="the give-up hook")
    stats = wait_for(settled(nsqd, "work", "workers"))
    # {"pre_fail": 1}: preprocess raised once, the retry reached the handler.
    done = worker.records("done")
    assert [(json.loads(r["body"]), r["attempts"]) for r in done] == [({"pre_fail": 1}, 2)]
    # {"validate_fail": 99}: validate raised on every attempt; past max attempts it was given up.
    assert json.loads(given_up[0]["body"]) == {"validate_fail": 99}
    assert given_up[0]["attempts"] == 3
    assert all(json.loads(r["body"]) == {"pre_fail": 1} for r in worker.records("start"))
    assert (stats["requeue_count"], stats["message_count"]) == (3, 2)  # 1 + 2 requeues, none lost
    assert worker.metric("nsq_worker_handler_errors_total") == 4
    assert worker.metric("nsq_worker_messages_given_up_total") == 1
    assert "planned validate failure" in worker.log
