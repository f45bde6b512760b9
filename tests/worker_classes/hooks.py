"""preprocess_message and validate_message: bodies "b64:..." are decoded before the handler,
"invalid" is refused, and {"pre_fail": n} / {"validate_fail": n} make a hook raise while attempts <= n."""

from __future__ import annotations

import base64

from nsq_worker import Message
from tests.worker_classes.recording import RecordingWorker, record, task_of


class HookWorker(RecordingWorker):
    def preprocess_message(self, message: Message) -> Message:
        record("preprocess", message)
        if message.attempts <= task_of(message).get("pre_fail", 0):
            raise RuntimeError("planned preprocess failure")
        if message.body.startswith(b"b64:"):
            message.body = base64.b64decode(message.body[4:])
        return message

    def validate_message(self, message: Message) -> bool:
        if message.attempts <= task_of(message).get("validate_fail", 0):
            raise RuntimeError("planned validate failure")
        return message.body != b"invalid"
