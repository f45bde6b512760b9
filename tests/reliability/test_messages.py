"""At-least-once, proved by counting: every message carries a unique body and the workers record each one
they handled to the end (before its FIN). Lost = published and never handled; duplicates = handled again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.support import (
    WORKER_SCRIPT,
    Records,
    Row,
    Sizes,
    Stream,
    channel_settled,
    tally,
)
from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.waiting import wait_for
from tests.rig.workers import Worker, WorkerFactory

TOPIC, CHANNEL = "work", "workers"
ONE_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 1}], indirect=True)
NO_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 0}], indirect=True)


class Run:
    """One scenario's workers on one nsqd, and what they recorded."""

    def __init__(self, workers: WorkerFactory, nsqd: Nsqd, **settings: object) -> None:
        self.workers = workers
        self.nsqd = nsqd
        self.script = WORKER_SCRIPT
        self.settings = {"log_level": "INFO", **settings}
        self.records = Records()

    def start(self, topic: str = TOPIC, channel: str = CHANNEL, **settings: object) -> Worker:
        argv = [sys.executable, str(self.script)]
        return self.workers.start(self.nsqd, topic, channel, argv=argv, **{**self.settings, **settings})

    def refresh(self) -> Records:
        return self.records.refresh(w.record_path for w in self.workers.workers)

    def wait_all_handled(self, bodies: list[bytes], timeout: float) -> None:
        sent = {b.decode() for b in bodies}

        def done() -> bool:
            return len(sent & self.refresh().handled().keys()) == len(sent)

        with contextlib.suppress(AssertionError):  # if not, the tally names what is missing
            wait_for(done, timeout, "every message handled", interval=0.5)
        wait_for(lambda: channel_settled(self.nsqd, TOPIC, CHANNEL), 30, "the channel to settle")


def modified_since(path: Path, mtime_ns: int) -> bool:
    return path.stat().st_mtime_ns != mtime_ns


def is_ready(worker: Worker) -> bool:
    return worker.get("/readyz").status_code == 200


def tally_into(row: Row, bodies: list[bytes], handled: Counter[str]) -> None:
    counts = tally(bodies, handled)
    row.count(counts.published, counts.handled, len(counts.lost), counts.duplicates)
    assert not counts.unexpected, f"handled bodies nobody published: {counts.unexpected[:5]}"
    assert not counts.lost, f"{len(counts.lost)} messages lost, e.g. {counts.lost[:5]}"


@ONE_NSQD
def test_a_worker_sigkilled_again_and_again_loses_nothing(
    nsq_cluster: NsqCluster, workers: WorkerFactory, scale: Sizes, row: Row
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic(TOPIC, CHANNEL)
    n, kills, seconds = scale.kill_messages, scale.kill_count, scale.kill_seconds
    row.order, row.section = 1.1, "Messages"
    row.scenario = "Worker SIGKILLed during a stream, a new one started each time"
    row.load = f"{n:,} messages published over {seconds:g} s to one nsqd; one worker, max in flight 100"
    row.fault = f"SIGKILL the worker {kills} times mid-stream (NSQ_MSG_TIMEOUT=2s)"
    run = Run(workers, nsqd, msg_timeout=2, max_in_flight=100)
    bodies = [f"m-{i:07d}".encode() for i in range(n)]

    worker = run.start()
    worker.wait_ready()
    stream = Stream(nsqd, TOPIC, bodies, seconds)
    stream.start()
    ready_after: list[float] = []
    for k in range(kills):
        stream.wait_for_progress((k + 1) / (kills + 1), seconds + 30)
        # Kill while nsqd holds messages in flight for this worker (a fast worker often holds none
        # at a given instant, more so on a loaded machine), so the kill is the fault it claims to be.
        deadline = time.monotonic() + 10
        while (
            nsqd.channel_stats(TOPIC, CHANNEL).get("in_flight_count", 0) == 0 and time.monotonic() < deadline
        ):
            time.sleep(0.001)
        worker.process.kill()
        killed = time.monotonic()
        worker = run.start()
        worker.wait_ready()
        ready_after.append(time.monotonic() - killed)
    stream.wait(seconds + 60)
    run.wait_all_handled(bodies, timeout=60 + n / 500)

    stats = nsqd.channel_stats(TOPIC, CHANNEL)
    row.see(f"each new worker was ready (subscribed) {max(ready_after):.1f} s at most after the kill")
    row.see(f"nsqd redelivered the killed workers' in-flight messages after 2 s: timeout_count="
            f"{stats['timeout_count']}, requeue_count={stats['requeue_count']}")  # fmt: skip
    row.see("duplicates: handled (recorded) but killed before nsqd got the FIN")
    tally_into(row, bodies, run.refresh().handled())
    assert stats["timeout_count"] > 0  # the kills really left messages in flight


@ONE_NSQD
def test_sigterm_finishes_in_flight_messages_and_exits_0(
    nsq_cluster: NsqCluster, workers: WorkerFactory, scale: Sizes, row: Row
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic(TOPIC, CHANNEL)
    n, terms, seconds = scale.term_messages, scale.term_count, scale.term_seconds
    row.order, row.section = 1.2, "Messages"
    row.scenario = "SIGTERM during a stream, a new worker started each time"
    row.load = (f"{n:,} messages over {seconds:g} s; handlers sleep 20 ms; concurrency 20, "
                "max in flight 40")  # fmt: skip
    row.fault = f"SIGTERM the worker {terms} times mid-stream"
    run = Run(workers, nsqd, concurrency=20, max_in_flight=40)
    bodies = [json.dumps({"n": i, "sleep": 0.02}).encode() for i in range(n)]

    worker = run.start()
    worker.wait_ready()
    stream = Stream(nsqd, TOPIC, bodies, seconds)
    stream.start()
    drains: list[float] = []
    unfinished: list[str] = []
    for k in range(terms):
        stream.wait_for_progress((k + 1) / (terms + 1), seconds + 30)
        wait_for(functools.partial(worker.records, "start"), 10, "the worker to be busy")
        signalled = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        drains.append(time.monotonic() - signalled)
        assert "draining" in worker.log
        started = {(r["id"], r["attempts"]) for r in worker.records("start")}
        finished = {(r["id"], r["attempts"]) for r in worker.records("done")}
        unfinished += sorted(f"{i} (attempt {a})" for i, a in started - finished)
        worker = run.start()
    stream.wait(seconds + 60)
    run.wait_all_handled(bodies, timeout=60 + n / 200)

    stats = nsqd.channel_stats(TOPIC, CHANNEL)
    row.see(f"every SIGTERMed worker exited 0 within {max(drains):.2f} s, logging 'draining'")
    row.see(
        f"every handler it had started finished ({len(unfinished)} did not); queued messages went "
        f"back at once: requeue_count={stats['requeue_count']}, timeout_count={stats['timeout_count']}"
    )
    tally_into(row, bodies, run.refresh().handled())
    assert not unfinished, f"handlers cut off by SIGTERM: {unfinished[:5]}"
    assert stats["timeout_count"] == 0
    assert row.duplicates == 0, "a message finished before SIGTERM was delivered again"


@NO_NSQD
def test_nsqd_sigkilled_and_restarted_with_its_data_loses_nothing(
    nsq_cluster: NsqCluster, workers: WorkerFactory, scale: Sizes, row: Row
) -> None:
    # --mem-queue-size=0: nsqd writes every message to its disk queue before it answers the publish,
    # so a SIGKILL loses nothing nsqd acknowledged. nsqd keeps its in-flight list in memory only and
    # writes its queue read positions every --sync-timeout (2 s; the rate stays under --sync-every's
    # 2,500 operations per 2 s so the timer is the only trigger). On restart it reads again from the
    # last written position. The kill is timed 1 s after a position write, so every message still in
    # flight at the kill was read after it and comes back: what is tested is the worker's promise
    # (reconnect by itself, hand nothing back unhandled), not nsqd's in-memory state.
    nsqd = nsq_cluster.add_nsqd(extra_args=["--mem-queue-size=0"])
    nsqd.create_topic(TOPIC, CHANNEL)
    positions = nsqd.data_path / f"{TOPIC}:{CHANNEL}.diskqueue.meta.dat"
    n, kills, rate = scale.nsqd_messages, scale.nsqd_kills, scale.nsqd_rate
    seconds = n / rate
    row.order, row.section = 1.3, "Messages"
    row.scenario = "nsqd SIGKILLed and restarted with its data directory during a stream"
    row.load = f"{n:,} messages at {rate:g}/s; one worker; nsqd --mem-queue-size=0 (every message on disk)"
    row.fault = f"SIGKILL nsqd {kills} times, restart it 0.5 s later on the same data directory and ports"
    run = Run(workers, nsqd, max_in_flight=50)
    bodies = [f"m-{i:07d}".encode() for i in range(n)]

    worker = run.start()
    worker.wait_ready()
    stream = Stream(nsqd, TOPIC, bodies, seconds)
    stream.start()
    back_after: list[float] = []
    for k in range(kills):
        stream.wait_for_progress((k + 1) / (kills + 1), seconds + 30)
        wait_for(positions.exists, 10, "nsqd's first queue position write")
        written = positions.stat().st_mtime_ns
        wait_for(functools.partial(modified_since, positions, written), 10, "a queue position write")
        time.sleep(1.0)
        nsqd.kill()
        killed = time.monotonic()
        time.sleep(0.5)
        nsqd.start()
        wait_for(functools.partial(is_ready, worker), 30, "the worker to reconnect")
        back_after.append(time.monotonic() - killed)
    stream.wait(seconds + 60)
    run.wait_all_handled(bodies, timeout=60 + n / 200)

    reconnects = worker.metric("nsq_worker_reconnects_total")
    row.see(f"the worker reconnected by itself ({reconnects:g} reconnects), ready again at most "
            f"{max(back_after):.1f} s after each kill; /readyz was 503 meanwhile")  # fmt: skip
    row.see(f"the publisher was refused {stream.refused} times while nsqd was down and retried")
    row.see("duplicates: messages nsqd read again from its last written queue position")
    assert worker.process.alive()
    assert "lost the connection to nsqd" in worker.log
    tally_into(row, bodies, run.refresh().handled())


@ONE_NSQD
def test_failing_handlers_retry_with_backoff_and_a_poison_message_is_dead_lettered(
    nsq_cluster: NsqCluster, workers: WorkerFactory, scale: Sizes, row: Row
) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic(TOPIC, CHANNEL)
    nsqd.create_topic("work-dead", "inspect")
    n = scale.failing_messages
    row.order, row.section = 1.4, "Messages"
    row.scenario = "Handlers that fail sometimes, and one poison message"
    row.load = (f"{n:,} messages: 1 in 10 fails once, 1 in 25 fails twice, one always fails; "
                "max attempts 5, requeue delay 0.1 s doubling, backoff cap 0.4 s")  # fmt: skip
    row.fault = "handler exceptions"
    run = Run(workers, nsqd, max_attempts=5, requeue_delay=0.1, backoff_cap=0.4,
              dead_letter_topic="work-dead")  # fmt: skip

    def task(i: int) -> dict[str, int]:
        return {"n": i, "fail": 2 if i % 25 == 0 else 1 if i % 10 == 0 else 0}

    poison = json.dumps({"n": -1, "fail": 1_000}).encode()
    bodies = [json.dumps(task(i)).encode() for i in range(n)]
    nsqd.publish(TOPIC, [*bodies[: n // 2], poison, *bodies[n // 2 :]])
    worker = run.start()
    run.wait_all_handled([*bodies, poison], timeout=60 + n / 20)
    records = run.refresh()

    given_up = records.of("give_up")
    assert [r["body"] for r in given_up] == [poison.decode()]
    assert given_up[0]["attempts"] == 5
    poison_fails = [r["attempts"] for r in records.of("fail") if r["body"] == poison.decode()]
    assert sorted(poison_fails) == [1, 2, 3, 4, 5]
    assert poison.decode() not in {r["body"] for r in records.of("done")}
    # Retries wait the requeue delay, doubling: 0.1 s after attempt 1, 0.2 s after attempt 2.
    starts: dict[str, list[float]] = {}
    for record in records.of("start"):
        starts.setdefault(record["body"], []).append(record["t"])
    twice = [sorted(starts[b.decode()]) for b in bodies if json.loads(b)["fail"] == 2]
    assert all(len(t) == 3 for t in twice)
    assert min(t[1] - t[0] for t in twice) >= 0.1 * 0.9
    assert min(t[2] - t[1] for t in twice) >= 0.2 * 0.9
    # The dead-letter topic holds the poison body, and only that.
    inspector = run.start(topic="work-dead", channel="inspect", dead_letter_topic="", RECORD_ONLY="1")
    wait_for(lambda: inspector.records("done"), 20, "the dead-lettered message")
    assert [r["body"] for r in inspector.records("done")] == [poison.decode()]

    stats = nsqd.channel_stats(TOPIC, CHANNEL)
    fails = len(records.of("fail"))
    row.see(
        f"{fails} handler failures, each requeued with a growing delay (requeue_count="
        f"{stats['requeue_count']}, timeout_count={stats['timeout_count']}); log 'backing off'"
    )
    row.see(
        f"the poison message failed attempts 1-5, then the give-up hook ran and the log said "
        f"'giving up on message {given_up[0]['id']} after 5 attempts'; its body is on work-dead"
    )
    assert "backing off" in worker.log
    assert f"giving up on message {given_up[0]['id']}" in worker.log
    assert stats["timeout_count"] == 0
    handled = records.handled()
    tally_into(row, [*bodies, poison], handled)
    assert row.duplicates == 0


@NO_NSQD
@pytest.mark.parametrize("touch", [True, False], ids=["touch", "no-touch"])
def test_a_handler_slower_than_msg_timeout_is_never_lost(
    nsq_cluster: NsqCluster, workers: WorkerFactory, scale: Sizes, row: Row, touch: bool
) -> None:
    nsqd = nsq_cluster.add_nsqd()
    began = time.monotonic()
    nsqd.create_topic(TOPIC, CHANNEL)
    slow, fast = scale.slow_messages, scale.fast_messages
    row.order, row.section = 1.5 + (0 if touch else 0.01), "Messages"
    row.scenario = f"A handler slower than msg_timeout, {'with' if touch else 'without'} TOUCH"
    row.load = f"{slow} messages whose first handling takes 3 s, among {fast:,} fast ones"
    row.fault = f"NSQ_MSG_TIMEOUT=2s, NSQ_TOUCH={'true' if touch else 'false'}"
    # nsqd scans for timed-out messages only in the channels it knew at its last 5-second refresh:
    # publish once the channel is in that list, so the control (no TOUCH) really times out.
    time.sleep(max(0.0, 5.5 - (time.monotonic() - began)))
    # Room for every slow handler and the redeliveries next to them, so only the slow ones time out.
    concurrency = 2 * slow + 20
    run = Run(
        workers, nsqd, msg_timeout=2, touch=touch, concurrency=concurrency, max_in_flight=2 * concurrency
    )
    slow_bodies = [json.dumps({"n": i, "sleep_first": 3}).encode() for i in range(slow)]
    bodies = [*slow_bodies, *(f"fast-{i:06d}".encode() for i in range(fast))]
    nsqd.publish(TOPIC, bodies)
    worker = run.start()
    run.wait_all_handled(bodies, timeout=60)
    # Let every first, slow handling end too (without TOUCH it ends after the redelivery was handled).
    wait_for(lambda: len(run.refresh().of("done")) >= len(bodies) + (0 if touch else slow), 20,
               "the slow first handlings to end")  # fmt: skip

    stats = nsqd.channel_stats(TOPIC, CHANNEL)
    handled = run.refresh().handled()
    if touch:
        touched = worker.metric("nsq_worker_messages_touched_total")
        row.see(f"TOUCH kept them alive: {touched:g} TOUCHes, timeout_count={stats['timeout_count']}, "
                "each slow message handled once")  # fmt: skip
        tally_into(row, bodies, handled)
        assert stats["timeout_count"] == 0
        assert row.duplicates == 0
        assert touched >= slow
    else:
        row.see(f"nsqd timed them out and redelivered them (timeout_count={stats['timeout_count']}); the "
                "late FIN was refused: log 'nsqd refused a command: E_FIN_FAILED'")  # fmt: skip
        tally_into(row, bodies, handled)
        assert stats["timeout_count"] >= slow
        assert row.duplicates == slow  # each slow one: the redelivery, then the first handling ends
        assert "E_FIN_FAILED" in worker.log
