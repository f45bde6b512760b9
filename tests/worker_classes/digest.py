"""Records each message's size and SHA-256 instead of its body: for messages of many MiB."""

from __future__ import annotations

import hashlib
import json
import os
import time

from nsq_worker import Message, NsqProcessWorker

RECORD = os.environ.get("RECORD_FILE", os.devnull)


class DigestWorker(NsqProcessWorker):
    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        line = {
            "event": "done",
            "id": message.message_id,
            "attempts": message.attempts,
            "bytes": len(message.body),
            "sha256": hashlib.sha256(message.body).hexdigest(),
            "t": time.time(),
        }
        with open(RECORD, "a") as handle:
            handle.write(json.dumps(line) + "\n")
