"""A handler that publishes what its JSON body asks for and records the outcome; the first delivery
of a {"bad": ...} body tries a publish nsqd refuses, records the error and raises it."""

from __future__ import annotations

import json

from nsq_worker import Message, NsqProcessWorker
from nsq_worker.session import PublishError
from tests.worker_classes.recording import RecordingWorker, record


class PublishingWorker(RecordingWorker):
    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        task = json.loads(message.body)
        if "mpub" in task:
            reader.mpublish("out", [body.encode() for body in task["mpub"]])
            record("mpublished", message)
        if "dpub" in task:
            reader.dpublish("out", task["dpub"].encode(), task["delay_ms"])
            record("dpublished", message)
        bad = task.get("bad")
        if bad and message.attempts == 1:
            try:
                if bad == "topic":
                    reader.mpublish("no spaces allowed", [b"x"])
                elif bad == "size":
                    reader.publish("out", b"x" * 4096)
                elif bad == "mpub-size":
                    reader.mpublish("out", [b"small", b"y" * 4096])
                elif bad == "delay":
                    reader.dpublish("out", b"later", 10 * 3600 * 1000)
            except PublishError as error:
                record("refused", message, error=str(error))
                raise
        record("done", message)
