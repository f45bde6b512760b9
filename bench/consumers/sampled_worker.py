"""`nsq-worker` under a sampling profiler: where the worker's CPU time goes.

python -m bench.consumers.sampled_worker OUT.json module:Class --topic T ... (nsq-worker's arguments)

A CPU-time timer (ITIMER_PROF, 1 ms asked; the kernel fires it at its tick, so idle waits are not
sampled) records the running Python frame: `self` counts the innermost function (with the C calls
it makes, such as a socket's send), `total` counts every function on the running greenlet's stack.
Deterministic profilers (cProfile) lose their way when greenlets switch; sampling does not.
"""

from __future__ import annotations

import nsq_worker._patch  # noqa: F401  (gevent first)

# isort: split

import json
import os
import signal
import sys
from collections import Counter
from types import CodeType, FrameType

INTERVAL = 0.001
_self: Counter[str] = Counter()
_total: Counter[str] = Counter()
_labels: dict[CodeType, str] = {}


def _label(code: CodeType) -> str:
    label = _labels.get(code)
    if label is None:
        path = code.co_filename
        for marker in ("site-packages/", "src/", "lib/python3.11/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        label = _labels[code] = f"{code.co_name} ({path}:{code.co_firstlineno})"
    return label


def _sample(signum: int, frame: FrameType | None) -> None:
    top = frame
    seen = set()
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return  # a module loading late (start-up), not the work
        seen.add(_label(frame.f_code))
        frame = frame.f_back
    if top is not None:
        _self[_label(top.f_code)] += 1
        _total.update(seen)


def _dump(path: str) -> None:
    signal.setitimer(signal.ITIMER_PROF, 0)
    data = {
        "interval": INTERVAL,
        "samples": sum(_self.values()),
        "self": _self.most_common(40),
        "total": _total.most_common(40),
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    from nsq_worker.cli import load_worker_class
    from nsq_worker.cli import main as worker_main

    load_worker_class(argv[0])  # imported before sampling starts: start-up is not the work
    signal.signal(signal.SIGPROF, _sample)
    signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)
    try:
        worker_main(argv)
    finally:
        _dump(out)
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
