"""Handlers that take {"sleep": s} seconds, and a teardown() that records how many still run.

The drain promise under test: teardown() runs only after every handler has finished, or has been
abandoned at the drain deadline (then the handler's `finally` runs before teardown() does).
"""

from __future__ import annotations

import gevent

from nsq_worker import Message, NsqProcessWorker
from tests.worker_classes.recording import note, record, task_of

running = 0


class SlowWorker(NsqProcessWorker):
    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        global running
        running += 1
        record("start", message)
        try:
            gevent.sleep(task_of(message).get("sleep", 0))
            record("done", message)
        finally:
            running -= 1
            record("unwound", message)

    def teardown(self) -> None:
        note("teardown", running=running)
