"""`nsq-operator`: run the Kubernetes operator (`run`) or the same job with local processes (`local`)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

from nsq_operator.local.command import add_parser as add_local_parser
from nsq_operator.local.command import run_local

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nsq-operator",
        description="Keep one single-CPU NSQ worker per nsqd that produces a topic.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the Kubernetes operator",
        description="Watch NsqConsumer objects and keep one worker Deployment per nsqd. Credentials come "
        "from the pod's service account, else from KUBECONFIG or ~/.kube/config.",
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; globs like 'team-*' work); default: all",
    )
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch every namespace (the default when no --namespace is given)",
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        default=DEFAULT_LIVENESS,
        help=f"serve the liveness probe here (default {DEFAULT_LIVENESS}; 'none' disables it)",
    )
    run.add_argument(
        "--peering",
        metavar="NAME",
        default=None,
        help="coordinate with other operators through this KopfPeering object (needs kopf's "
        "peering CRDs); by default the operator runs standalone, which is safe because "
        "every write it makes is idempotent",
    )
    run.add_argument("--priority", type=int, default=0, help="peering priority (with --peering)")
    run.add_argument("-v", "--verbose", action="store_true", help="log more")
    run.add_argument("--debug", action="store_true", help="log everything, including kopf's internals")

    add_local_parser(commands)
    return parser


def run(args: argparse.Namespace) -> int:
    import kopf

    import nsq_operator.handlers  # noqa: F401  (registers the handlers with kopf's default registry)

    kopf.configure(verbose=args.verbose, debug=args.debug)
    if not (args.verbose or args.debug):
        # The chart's logLevel arrives as NSQ_OPERATOR_LOG_LEVEL (debug, info, warning, error).
        level = os.environ.get("NSQ_OPERATOR_LOG_LEVEL", "info").upper()
        logging.getLogger().setLevel(getattr(logging, level, logging.INFO))
    liveness = None if args.liveness in ("", "none") else args.liveness
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=liveness,
        identity=_identity(),  # type: ignore[arg-type]  # kopf.Identity is a NewType of str, not exported
    )
    return 0


def _identity() -> str:
    """Who this operator is among peers: the pod's hostname and pid.

    kopf's default asks the password database for the user's name, which an arbitrary non-root UID
    (the norm under restricted pod security) does not have.
    """
    return f"nsq-operator@{socket.gethostname()}/{os.getpid()}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    return run_local(args)


if __name__ == "__main__":
    sys.exit(main())
