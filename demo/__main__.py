"""`python -m demo [local|kube] [--short]`."""

from __future__ import annotations

import argparse
import sys

from tests.rig.procs import RigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("which", choices=("local", "kube"), nargs="?", default="local")
    parser.add_argument("--short", action="store_true", help="a quick run, for the test suite")
    args = parser.parse_args(argv)
    try:
        if args.which == "local":
            from demo import local

            return local.run(short=args.short)
        from demo import kube

        return kube.run(short=args.short)
    except RigError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
