"""`nsq-operator`: run the Kubernetes operator (`run`) or the same job with local processes (`local`)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import socket
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from nsq_operator.local.command import add_parser as add_local_parser
from nsq_operator.local.command import run_local
from nsq_operator.rollout import DEFAULT_MAX_CONCURRENT, MAX_CONCURRENT_ENV

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
DEFAULT_LEASE_NAME = "nsq-operator"


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
        help=f"serve /healthz, /readyz and /metrics at this URL's host and port (default "
        f"{DEFAULT_LIVENESS}; 'none' serves nothing)",
    )
    run.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        default=os.environ.get("NSQ_OPERATOR_LEADER_ELECTION_NAMESPACE") or None,
        help="elect one leader among the operators that share this namespace's Lease; only the "
        "leader reconciles, the others stand by (default: no election, this operator reconciles)",
    )
    run.add_argument(
        "--leader-election-name",
        metavar="NAME",
        default=DEFAULT_LEASE_NAME,
        help=f"the Lease's name (default {DEFAULT_LEASE_NAME})",
    )
    run.add_argument(
        "--max-concurrent-rollouts",
        metavar="N",
        type=_count,
        default=_count(os.environ.get(MAX_CONCURRENT_ENV) or str(DEFAULT_MAX_CONCURRENT)),
        help="at most N worker Deployments roll out a new pod template at once, over every consumer: "
        "the others keep their old template until a place frees (an operator upgrade or a spec change "
        f"restarts workers N at a time); 0: no limit (default ${MAX_CONCURRENT_ENV} or "
        f"{DEFAULT_MAX_CONCURRENT})",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log more")
    run.add_argument("--debug", action="store_true", help="log everything, including kopf's internals")

    add_local_parser(commands)
    return parser


def _count(text: str) -> int:
    """A count of 0 or more, for argparse (and its environment variable)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value


M_ARENA_MAX = -8  # glibc's mallopt() parameter number


def _few_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before any thread starts (what MALLOC_ARENA_MAX=2 does).

    By default each thread that allocates may get an arena of its own (up to 8 per core), and the
    reconcile threads' short-lived JSON bodies then leave tens of MiB of fragmented, unreturned
    memory behind. Two arenas cost nothing measurable here: the threads mostly wait on the network.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)


def run(args: argparse.Namespace) -> int:
    _few_malloc_arenas()
    import kopf

    from nsq_operator.handlers import Options  # registers the handlers with kopf's default registry
    from nsq_operator.lookupd import redact_logs

    kopf.configure(verbose=args.verbose, debug=args.debug)
    redact_logs()  # no URL's credentials in any log line, kopf's own (--debug prints bodies) included
    if not (args.verbose or args.debug):
        # The chart's logLevel arrives as NSQ_OPERATOR_LOG_LEVEL (debug, info, warning, error).
        level = os.environ.get("NSQ_OPERATOR_LOG_LEVEL", "info").upper()
        logging.getLogger().setLevel(getattr(logging, level, logging.INFO))
    if not args.debug:
        # kopf says "Handler ... succeeded" for every watch event of every Deployment: noise at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    host, port = _health_address(args.liveness)
    options = Options(
        namespaces=tuple(args.namespace),
        health_host=host,
        health_port=port,
        lease_namespace=args.leader_election_namespace,
        lease_name=args.leader_election_name,
        identity=_identity(),
        max_concurrent_rollouts=args.max_concurrent_rollouts,
    )
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=True,  # kopf's peering is not leader election; the Lease is (leader.py)
        memo=kopf.Memo(options=options),
        identity=_identity(),  # type: ignore[arg-type]  # kopf.Identity is a NewType of str, not exported
    )
    return 0


def _health_address(url: str) -> tuple[str | None, int]:
    """The host and port of `--liveness` (the path is ignored: every endpoint is served there)."""
    if url in ("", "none"):
        return None, 0
    parsed = urlsplit(url)
    if not parsed.hostname or not parsed.port:
        raise SystemExit(f"nsq-operator: --liveness {url!r} needs a host and a port, like {DEFAULT_LIVENESS}")
    return parsed.hostname, parsed.port


def _identity() -> str:
    """Who this operator is in the Lease and in events: the pod's name (or hostname) and pid.

    kopf's default asks the password database for the user's name, which an arbitrary non-root UID
    (the norm under restricted pod security) does not have.
    """
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}/{os.getpid()}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    return run_local(args)


if __name__ == "__main__":
    sys.exit(main())
