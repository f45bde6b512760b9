"""The Kubernetes demo: the operator on the rig's control plane (being built: issue 4/7 and 5/7)."""

from __future__ import annotations


def run(short: bool = False) -> int:
    print("The Kubernetes demo is not ready yet; `make demo` shows the same job with local processes.")
    return 0
