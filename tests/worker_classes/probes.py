"""Workers with a setup() to watch: a slow one (SETUP_SECONDS) and one that fails."""

from __future__ import annotations

import os

import gevent

from tests.worker_classes.recording import RecordingWorker, note


class SlowSetupWorker(RecordingWorker):
    def setup(self) -> None:
        note("setup_start")
        gevent.sleep(float(os.environ["SETUP_SECONDS"]))
        note("setup_done")

    def teardown(self) -> None:
        note("teardown")


class FailingSetupWorker(RecordingWorker):
    def setup(self) -> None:
        raise ValueError("no model file at /models/orders.bin")
