"""Plain words for the person watching a demo, and a steady stream of messages for it to show."""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
import time
from typing import IO

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


class LogFollower(threading.Thread):
    """Passes a child's output through and lets the demo wait for a line, so each step waits for what it
    announces instead of guessing how long that takes on a busy machine."""

    def __init__(self, stream: IO[bytes], echo: IO[str]) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self._echo = echo
        self._lines: list[str] = []
        self._changed = threading.Condition()

    def run(self) -> None:
        for raw in self._stream:
            line = raw.decode(errors="replace")
            self._echo.write(line)
            self._echo.flush()
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first line matching `pattern`; raises TimeoutError naming the pattern after `timeout` s."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    if re.search(pattern, line):
                        return line
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no line matching {pattern!r} within {timeout:g}s")
                self._changed.wait(remaining)
