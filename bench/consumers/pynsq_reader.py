"""pynsq's Reader (tornado): a synchronous no-op or JSON handler, or asynchronous sleeps.

python -m bench.consumers.pynsq_reader --topic T --channel C --nsqd-tcp-address H:P \
    --max-in-flight N --handler noop|json|sleep

`sleep` reads {"sleep": seconds}, calls message.enable_async() and finishes the message from a
tornado timer: pynsq's way of running many latency-bound handlers in one process.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import Any

import nsq
from tornado.ioloop import IOLoop


def noop(message: Any) -> bool:
    return True


def decode(message: Any) -> bool:
    json.loads(message.body)
    return True


def sleep(message: Any) -> None:
    seconds = float(json.loads(message.body)["sleep"])
    message.enable_async()
    IOLoop.current().call_later(seconds, message.finish)


HANDLERS: dict[str, Callable[[Any], bool | None]] = {"noop": noop, "json": decode, "sleep": sleep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--nsqd-tcp-address", required=True)
    parser.add_argument("--max-in-flight", type=int, default=1)
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="noop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    nsq.Reader(
        topic=args.topic,
        channel=args.channel,
        message_handler=HANDLERS[args.handler],
        nsqd_tcp_addresses=[args.nsqd_tcp_address],
        max_in_flight=args.max_in_flight,
    )
    nsq.run()


if __name__ == "__main__":
    main()
