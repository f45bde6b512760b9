"""`kubectl get -w` into a file: every state the API server reported, kept for the test to read.

A poll sees the states that last long enough to be polled; a watch sees them all, so a bound ("never
more than N at once") can be checked at every moment, and a deleted object's last state is still
there after it is gone.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.rig.kube import KubeCluster
from tests.rig.tools import binary


class KubectlWatch:
    """`kubectl get <what> -w --output-watch-events -o json`, written to `path` until stopped."""

    def __init__(self, kube: KubeCluster, what: Sequence[str], path: Path) -> None:
        self.path = path
        self._out = path.open("w")
        self._process = subprocess.Popen(
            [binary("kubectl"), f"--kubeconfig={kube.kubeconfig}", "get", *what, "-w",
             "--output-watch-events", "-o", "json"],
            stdout=self._out, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def events(self) -> list[dict[str, Any]]:
        """The watch events so far, in the API server's order."""
        text, decoder, index = self.path.read_text(), json.JSONDecoder(), 0
        found: list[dict[str, Any]] = []
        while True:
            while index < len(text) and text[index].isspace():
                index += 1
            if index >= len(text):
                return found
            try:
                event, index = decoder.raw_decode(text, index)
            except json.JSONDecodeError:
                return found  # a half-written last object
            found.append(event)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._out.close()
