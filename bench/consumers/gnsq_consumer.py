"""A stock gnsq Consumer, as its documentation shows it: a handler connected to `on_message`.

python -m bench.consumers.gnsq_consumer --topic T --channel C --nsqd-tcp-address H:P \
    --max-in-flight N --handler noop|json
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

# isort: split

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from typing import Any  # noqa: E402

import gnsq  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--nsqd-tcp-address", required=True)
    parser.add_argument("--max-in-flight", type=int, default=1)
    parser.add_argument("--handler", choices=("noop", "json"), default="noop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    consumer = gnsq.Consumer(
        args.topic, args.channel, nsqd_tcp_addresses=[args.nsqd_tcp_address], max_in_flight=args.max_in_flight
    )

    def noop(consumer: Any, message: Any) -> None:
        pass

    def decode(consumer: Any, message: Any) -> None:
        json.loads(message.body)

    consumer.on_message.connect(decode if args.handler == "json" else noop, weak=False)
    consumer.start(block=True)


if __name__ == "__main__":
    main()
