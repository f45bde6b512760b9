"""{"hold_until_received": n}: the first delivery holds its handler (past a short msg_timeout, TOUCH
off) until the worker has received n deliveries, i.e. until nsqd's redelivery of it is queued."""

from __future__ import annotations

import time

import gevent

from nsq_worker import Message, NsqProcessWorker, runtime
from tests.worker_classes.recording import record, task_of


class HoldingWorker(NsqProcessWorker):
    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        record("start", message)
        wanted = task_of(message).get("hold_until_received", 0)
        deadline = time.monotonic() + 20
        # The runtime's own count of deliveries: a test's peek, not something handlers should use.
        while message.attempts == 1 and runtime.of(reader).metrics.received < wanted:
            if time.monotonic() > deadline:
                raise RuntimeError("no redelivery came")
            gevent.sleep(0.05)
        record("done", message)
