"""`nsq-operator local ... -- <worker command>`: the arguments, and starting the controller."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from nsq_operator.local.controller import LocalConfig, LocalController
from nsq_operator.local.supervisor import RestartPolicy
from nsq_operator.local.view import View
from nsq_operator.lookupd import redact, redact_logs

EXAMPLE = (
    "example:\n  nsq-operator local --lookupd-http-address http://127.0.0.1:4161 --topic events "
    "--channel archive -- nsq-worker nsq_worker.examples:LogWorker"
)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register the `local` subcommand on the top-level parser's subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "local",
        help="run one worker process per nsqd on this machine, no cluster",
        description="Poll nsqlookupd like the operator does and keep one worker process per nsqd that "
        "produces the topic, each pinned to one core, restarted with backoff when it dies, "
        "and stopped (drained) when its nsqd leaves. It runs a fixed number of workers, one per "
        "nsqd: the per-nsqd autoscaling of NsqConsumer's spec.autoscaling is the operator's only. "
        "The worker command gets the same "
        "environment a worker pod gets (NSQ_TOPIC, NSQ_CHANNEL, NSQD_TCP_ADDRESS, "
        "NSQ_HEALTH_PORT, ...).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--lookupd-http-address",
        action="append",
        required=True,
        metavar="URL",
        dest="lookupds",
        help="an nsqlookupd HTTP address (repeatable)",
    )
    parser.add_argument("--topic", required=True, help="the topic to consume")
    parser.add_argument("--channel", required=True, help="the channel to consume it on")
    parser.add_argument(
        "--poll-interval",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="how often to ask lookupd (default 5)",
    )
    parser.add_argument(
        "--removal-grace",
        type=_non_negative,
        default=30.0,
        metavar="SECONDS",
        help="how long an nsqd may be missing from lookupd before its worker stops (default 30)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="how long a stopping worker may drain before it is killed (default 30)",
    )
    parser.add_argument(
        "--restart-cap",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="the longest wait between restarts of a dying worker (default 60)",
    )
    parser.add_argument(
        "--summary-every",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="with the plain view, print a summary line this often (default 10)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where each worker's output goes (default: a new temporary directory)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin each worker to one CPU core")
    parser.add_argument(
        "--view",
        choices=("auto", "live", "plain"),
        default="auto",
        help="live: a table redrawn in place; plain: log lines; auto: live on a terminal",
    )
    parser.add_argument(
        "worker", nargs=argparse.REMAINDER, metavar="-- WORKER COMMAND", help="the worker command, after --"
    )
    return parser


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def run_local(args: argparse.Namespace) -> int:
    argv = args.worker[1:] if args.worker[:1] == ["--"] else args.worker
    if not argv:
        print("nsq-operator local: error: give the worker command after --\n" + EXAMPLE, file=sys.stderr)
        return 2
    bad = [url for url in args.lookupds if not url.startswith(("http://", "https://"))]
    if bad:
        print(
            f"nsq-operator local: error: --lookupd-http-address must be an http(s) URL: {redact(bad[0])!r}",
            file=sys.stderr,
        )
        return 2
    live = args.view == "live" or (args.view == "auto" and sys.stdout.isatty())
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    redact_logs()  # lookupd URLs may carry credentials: none reach the log
    if live:
        logging.getLogger("nsq_operator.local").propagate = False  # the table shows the events instead
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="nsq-local-"))
    config = LocalConfig(
        lookupds=tuple(url.rstrip("/") for url in args.lookupds),
        topic=args.topic,
        channel=args.channel,
        argv=tuple(argv),
        log_dir=log_dir,
        poll_interval=args.poll_interval,
        removal_grace=args.removal_grace,
        drain_timeout=args.drain_timeout,
        pin=not args.no_pin,
        policy=RestartPolicy(cap=args.restart_cap),
    )
    return LocalController(config, View(sys.stdout, live=live, summary_every=args.summary_every)).run()
