"""A worker in the gnsq_mp style whose handler does what each JSON body asks, and records it.

  {"sleep": s}  gevent.sleep first     {"fail": n}   raise while attempts <= n
  {"async": s}  finish s seconds later from another greenlet
Events (one JSON line each in $RECORD_FILE): start (with the number of handlers running), fail,
done, async_done, give_up.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import gevent

from nsq_worker import Message, NsqProcessWorker

RECORD = os.environ.get("RECORD_FILE", os.devnull)
running = 0


def record(event: str, message: Message, **extra: Any) -> None:
    line = {
        "event": event,
        "id": message.message_id,
        "attempts": message.attempts,
        "body": message.body.decode(),
        "t": time.time(),
        **extra,
    }
    with open(RECORD, "a") as handle:
        handle.write(json.dumps(line) + "\n")


def note(event: str, **extra: Any) -> None:
    """A record that is about the worker, not about one message."""
    with open(RECORD, "a") as handle:
        handle.write(json.dumps({"event": event, "t": time.time(), **extra}) + "\n")


def task_of(message: Message) -> dict[str, Any]:
    task = json.loads(message.body) if message.body.startswith(b"{") else {}
    return task if isinstance(task, dict) else {}


def finish_later(message: Message) -> None:
    record("async_done", message)
    message.finish()


class RecordingWorker(NsqProcessWorker):
    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        global running
        task = task_of(message)
        running += 1
        record("start", message, running=running, topic=reader.topic, nsqd=reader.nsqd_tcp_address)
        try:
            if task.get("sleep"):
                gevent.sleep(task["sleep"])
            if message.attempts <= task.get("fail", 0):
                record("fail", message)
                raise RuntimeError("planned failure")
            if task.get("async"):
                message.enable_async()
                gevent.spawn_later(task["async"], finish_later, message)
                return
        finally:
            running -= 1
        record("done", message)

    def give_up(self, message: Message) -> None:
        record("give_up", message)
        super().give_up(message)


if __name__ == "__main__":
    RecordingWorker.run(block=True)
