"""The worker the message scenarios of tests/reliability run.

Plain bodies are handled at once; JSON bodies may ask for
  {"sleep": s}        gevent.sleep on every delivery     {"sleep_first": s}  only on the first delivery
  {"fail": n}         raise while attempts <= n
It records `done` for every message it handled, *before* returning (the FIN is sent after it), so a
message with no `done` record was never handled, and two `done` records are a duplicate delivery.
`start` is recorded for JSON bodies, and for every body when RECORD_START=1; RECORD_ONLY=1 handles
every body as plain (to inspect a dead-letter topic). The file stays open and is line-buffered: each
record is one write(2), so a SIGKILL loses none of them.
"""

from __future__ import annotations

import json
import os
import time

import gevent

from nsq_worker import Message, NsqProcessWorker

RECORD = open(os.environ.get("RECORD_FILE", os.devnull), "a", buffering=1)  # noqa: SIM115
RECORD_START = os.environ.get("RECORD_START") == "1"
RECORD_ONLY = os.environ.get("RECORD_ONLY") == "1"


def record(event: str, message: Message) -> None:
    line = {
        "event": event,
        "id": message.message_id,
        "attempts": message.attempts,
        "body": message.body.decode(),
        "t": time.time(),
    }
    RECORD.write(json.dumps(line) + "\n")


class ReliabilityWorker(NsqProcessWorker):
    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        task = json.loads(message.body) if message.body[:1] == b"{" and not RECORD_ONLY else {}
        if task or RECORD_START:
            record("start", message)
        pause = task.get("sleep", 0) or (task.get("sleep_first", 0) if message.attempts == 1 else 0)
        if pause:
            gevent.sleep(pause)
        if message.attempts <= task.get("fail", 0):
            record("fail", message)
            raise RuntimeError("planned failure")
        record("done", message)

    def give_up(self, message: Message) -> None:
        record("give_up", message)
        super().give_up(message)


if __name__ == "__main__":
    ReliabilityWorker.run(block=True)
