"""Two of the worker's connections in one gevent process: one worker instance per nsqd, side by side.

python -m bench.consumers.two_in_one module:Class --topic T --channel C --nsqd-tcp-address A \
    --nsqd-tcp-address B --max-in-flight N

This is the "one process for every nsqd" side of the scaling benchmark, with the very same
consumer code as the "one process per nsqd" side: only the process layout differs.
"""

from __future__ import annotations

import nsq_worker._patch  # noqa: F401  (gevent first)

# isort: split

import argparse
import logging
import signal
import sys

import gevent

from nsq_worker import runtime
from nsq_worker.cli import load_worker_class
from nsq_worker.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("worker_class", help="module:Class, an NsqProcessWorker subclass")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--nsqd-tcp-address", action="append", required=True)
    parser.add_argument("--max-in-flight", type=int, default=2500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cls = load_worker_class(args.worker_class)
    workers = [
        cls(
            Settings(
                topic=args.topic,
                channel=args.channel,
                nsqd_tcp_address=address,
                max_in_flight=args.max_in_flight,
                health_port=0,
                log_level="WARNING",
                log_format="text",
            )
        )
        for address in args.nsqd_tcp_address
    ]
    for worker in workers:
        worker.start()

    def stop() -> None:
        for worker in workers:
            worker.stop()

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    for worker in workers:
        worker.join()
    sys.exit(max(runtime.of(worker).exit_code for worker in workers))


if __name__ == "__main__":
    main()
