"""Worker classes for the benchmarks (run with `nsq-worker bench.consumers.workers:JsonWorker ...`)."""

from __future__ import annotations

import json

from nsq_worker.message import Message
from nsq_worker.worker import NsqProcessWorker


class JsonWorker(NsqProcessWorker):
    """Decodes the JSON body and does nothing else: the cost a real handler pays first."""

    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        json.loads(message.body)


def checksum(body: bytes, rounds: int) -> int:
    """Pure-Python work proportional to the body: about 17 µs a round for 200 bytes here."""
    h = 0
    for _ in range(rounds):
        for b in body:
            h = (h * 31 + b) & 0xFFFFFFFF
    return h


class CpuWorker(NsqProcessWorker):
    """Spends about 50 µs of CPU on every message: a stand-in for a handler's real work."""

    rounds = 3

    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        checksum(message.body, self.rounds)
