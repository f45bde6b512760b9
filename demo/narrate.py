"""Plain words for the person watching a demo, and a steady stream of messages for it to show."""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time

from tests.rig.nsq import Nsqd


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


class Publisher(threading.Thread):
    """Publishes `rate` messages a second to every nsqd in `nsqds` (the list may change) until stopped."""

    def __init__(self, nsqds: list[Nsqd], topic: str, rate: int) -> None:
        super().__init__(daemon=True)
        self.nsqds = nsqds
        self.topic = topic
        self.rate = rate
        self.sent = 0
        self._stop_event = threading.Event()
        self._ids = itertools.count()

    def run(self) -> None:
        batch = max(1, self.rate // 10)
        while not self._stop_event.wait(0.1):
            for nsqd in list(self.nsqds):
                bodies = [
                    json.dumps({"id": next(self._ids), "at": time.time()}).encode() for _ in range(batch)
                ]
                try:
                    self.sent += nsqd.publish(self.topic, bodies)
                except OSError as error:
                    print(f"(publish to {nsqd.name} failed: {error})", file=sys.stderr)
                except Exception:  # an nsqd leaving mid-demo is part of the show
                    pass

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)
