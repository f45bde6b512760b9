"""A handler class written the way people write them: it names its own attributes freely.

Every name a worker's machinery could plausibly use is assigned in `setup()` and again in the
handler. Nothing of the worker may break: it must still consume, drain, report health and
metrics, and call `teardown()` with the subclass's own values intact. Its handler is an old
gnsq_mp one: `handle_message(self, reader, message)` and `reader.publish`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from nsq_worker import Message, NsqProcessWorker
from tests.worker_classes.recording import note, record

CLASHING_NAMES = (
    "session", "settings", "state", "metrics", "port", "connection", "pool", "queue", "client",
    "reader", "runtime", "exit_code", "sock", "socket", "loop", "hub", "health", "backoff", "running",
    "draining", "stopped", "in_flight", "writer", "config", "logger", "log", "timer", "conn",
    "nsqd", "server", "watchdog", "greenlets", "idle", "workers", "handler", "topic", "channel",
    "nsqd_tcp_address", "nsqd_addr",
)  # fmt: skip


class Mine:
    """A value of the subclass's own, so a test can see it was not replaced."""

    def __init__(self, where: str, name: str) -> None:
        self.tag = f"{where}:{name}"

    def __repr__(self) -> str:
        return self.tag


class ClashingWorker(NsqProcessWorker):
    def setup(self) -> None:
        for name in CLASHING_NAMES:
            setattr(self, name, Mine("setup", name))
        note("setup_done")

    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        for name in CLASHING_NAMES:
            setattr(self, name, Mine("handler", name))
        # gnsq_mp's publish from a handler: a digest of each message to the "seen" topic.
        reader.publish("seen", hashlib.sha1(message.body).hexdigest().encode())
        record("done", message)

    def teardown(self) -> None:
        kept: dict[str, Any] = {name: repr(getattr(self, name)) for name in CLASHING_NAMES}
        note("teardown", kept=kept)


if __name__ == "__main__":
    ClashingWorker.run(block=True)
