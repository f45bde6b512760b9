"""Example workers for the image, the demo, the benchmarks and the tests.

nsq-worker nsq_worker.examples:LogWorker --topic T --channel C --nsqd-tcp-address host:4150
"""

from __future__ import annotations

import json
import logging
import time

import gevent

from nsq_worker.message import Message
from nsq_worker.settings import Settings
from nsq_worker.worker import NsqProcessWorker

log = logging.getLogger("nsq_worker.examples")


class LogWorker(NsqProcessWorker):
    """Logs every message's id, attempts and body (the first 512 bytes)."""

    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        log.info(
            "message %s",
            message.message_id,
            extra={
                "message_id": message.message_id,
                "attempts": message.attempts,
                "body": message.body[:512].decode("utf-8", "backslashreplace"),
            },
        )


class NoopWorker(NsqProcessWorker):
    """Finishes every message and does nothing else: the benchmarks' measure of the worker itself."""

    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        return None


class CountingWorker(NsqProcessWorker):
    """Counts messages and logs the total and the rate every `report_every` seconds."""

    report_every = 5.0

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.count = 0
        self._reported = (time.monotonic(), 0)

    def setup(self) -> None:
        gevent.spawn(self._report)

    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        self.count += 1

    def _report(self) -> None:
        while True:
            gevent.sleep(self.report_every)
            now, count = time.monotonic(), self.count
            then, before = self._reported
            self._reported = (now, count)
            if count != before:
                rate = (count - before) / (now - then)
                log.info("%d messages, %.0f/s", count, rate, extra={"count": count, "rate": round(rate, 1)})


class SleepWorker(NsqProcessWorker):
    """Sleeps (cooperatively) for the seconds in a JSON body like {"sleep": 1.5}; raises on bad JSON.

    {"fail": true} raises instead, to show requeues, give-up and the dead-letter topic.
    """

    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        task = json.loads(message.body)
        if not isinstance(task, dict):
            raise TypeError(f"expected a JSON object, got {type(task).__name__}")
        if task.get("fail"):
            raise RuntimeError("asked to fail")
        seconds = float(task.get("sleep", 0))
        if seconds > 0:
            gevent.sleep(seconds)
