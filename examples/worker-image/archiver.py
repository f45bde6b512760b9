"""An example handler: decode each JSON event and log a one-line summary.

Returning finishes the message; raising requeues it with backoff, and after max attempts the
give-up hook runs (it logs, and publishes to the dead-letter topic when one is configured).
"""

from __future__ import annotations

import json
import logging

from nsq_worker import Message, NsqProcessWorker

log = logging.getLogger("archiver")


class ArchiveWorker(NsqProcessWorker):
    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        event = json.loads(message.body)  # bad JSON raises: the message is retried, then given up
        log.info("archived", extra={"message_id": message.message_id, "kind": event.get("kind", "?")})


if __name__ == "__main__":
    ArchiveWorker.run(block=True)
