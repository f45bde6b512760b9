"""Render RELIABILITY.md from the rows the reliability scenarios wrote.

    python -m tests.reliability.report [--output RELIABILITY.md]

Each scenario writes its row (a JSON file) when it ends, under ~/.cache/nsq-operator/reliability/<mode>/
(NSQ_RELIABILITY_RESULTS moves it): `short` from the normal test suite, `soak` from `make soak`
(NSQ_SOAK=1). The report shows the soak run first when there is one, then the short run. A run
with no rows on this machine keeps its section from the file as it was (with its own date and commit).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.reliability.support import PROJECT_ROOT, Row, read_rows, results_dir

COMMANDS = {
    "soak": "`make soak` (`NSQ_SOAK=1 .venv/bin/python -m pytest tests/reliability`, then "
    "`.venv/bin/python -m tests.reliability.report`)",
    "short": "`make test` (any `pytest` run that includes the scenarios writes their rows), then "
    "`.venv/bin/python -m tests.reliability.report`",
}
TITLES = {
    "soak": "Soak run (the long sizes, NSQ_SOAK=1)",
    "short": "Short run (the sizes of the normal test suite)",
}

INTRO = """\
# Reliability

What the worker and the operator promise, proved by breaking the real parts on purpose: real nsqd and
nsqlookupd, a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler), a real node (a kubelet with containerd and runc, tests/rig/node.py) where the pods
of the bad-input rows run, kwok's fake nodes for the rows that need many pods, and the real
`nsq-worker` and `nsq-operator` processes. Faults are SIGKILLs, SIGTERMs, restarts, outages and bad
input.

No pod state in this table is written by a test: the bad-input rows whose fault column says "on the
real node" show what the kubelet itself reported (ErrImageNeverPull, CreateContainerConfigError, a
FailedMount event, CrashLoopBackOff with the worker's own termination message), and an
unschedulable worker is refused by the real kube-scheduler. The Kubernetes path for running pods
(the operator as a pod, restarts, drains, CPU quota, TLS and AUTH from Secrets) is tested in
`tests/e2e/node/`.

How messages are counted: every message carries a unique body; the worker records each message it
handled to the end *before* returning (its FIN is sent after), in a file per process that survives
SIGKILL. **Lost** = published and never handled (must be 0); **duplicates** = handlings beyond the
first, which at-least-once delivery allows and which the table reports.

The scenarios are `tests/reliability/`, and the rows of the Operations section come from tests that
need more of the rig: the helm upgrade with live consumers (`tests/e2e/node/test_helm_upgrade.py`, on
the real node), the planted-secret search (`tests/integration/test_operator_redaction.py`) and the
refused NsqConsumers (`tests/e2e/test_admission_policy.py`). The short versions run in every
`pytest`; `make soak` runs the long versions of `tests/reliability/`; either way each scenario writes
its row and this file is rendered from the rows by `python -m tests.reliability.report` (a run this
machine has no rows for keeps its section as it was). A row whose result is not "passed" is a
failing test: what it found is in the row.
"""


def cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| # | scenario | load | fault injected | messages published | messages handled | lost (must be 0) "
        "| duplicates | what the user saw (conditions, events, logs) | result | s |",
        "|---|---|---|---|--:|--:|--:|--:|---|---|--:|",
    ]
    section = None
    for number, row in enumerate(rows, 1):
        if row.section != section:
            section = row.section
            lines.append(f"| | **{cell(section)}** | | | | | | | | | |")
        saw = "<br>".join(cell(s) for s in row.saw)
        result = "passed" if row.outcome == "passed" else f"**{cell(row.outcome)}**"
        lost = cell(row.lost) if not row.lost else f"**{cell(row.lost)}**"
        lines.append(
            f"| {number} | {cell(row.scenario)} | {cell(row.load)} | {cell(row.fault)} "
            f"| {cell(row.published)} | {cell(row.handled)} | {lost} | {cell(row.duplicates)} "
            f"| {saw} | {result} | {row.seconds:.0f} |"
        )
    return lines


def sections_of(text: str) -> dict[str, str]:
    """The run sections of a rendered RELIABILITY.md, by mode: what a machine without rows keeps."""
    found: dict[str, str] = {}
    for mode, title in TITLES.items():
        start = text.find(f"## {title}\n")
        if start >= 0:
            end = text.find("\n## ", start + 1)
            found[mode] = text[start : end if end >= 0 else len(text)].rstrip() + "\n"
    return found


def render(modes: Sequence[str] = ("soak", "short"), earlier: str = "") -> str:
    """The report from this machine's rows; a run with no rows here keeps its section from `earlier`
    (the soak run, say, measured on another day), which says its own date and commit."""
    out = [INTRO]
    found = False
    kept = sections_of(earlier)
    for mode in modes:
        rows = read_rows(mode)
        if not rows:
            if mode in kept:
                out.append(kept[mode])
                found = True
            continue
        found = True
        when = sorted({r.finished_at[:10] for r in rows})
        commits = sorted({r.commit for r in rows})
        failed = [r for r in rows if r.outcome != "passed"]
        out.append(f"## {TITLES[mode]}\n")
        out.append(f"Produced by {COMMANDS[mode]} on {', '.join(when)} at commit {', '.join(commits)}; "
                   f"{len(rows)} scenarios, {len(rows) - len(failed)} passed, "
                   f"{sum(r.seconds for r in rows) / 60:.1f} minutes in all.\n")  # fmt: skip
        out.extend(table(rows))
        out.append("")
    if not found:
        out.append(f"No results yet under {results_dir('').parent}: run `make soak` or the command above.\n")
    return "\n".join(out).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "RELIABILITY.md")
    parser.add_argument("--mode", choices=["soak", "short"], action="append",
                        help="only these runs (repeatable; default: both, soak first)")  # fmt: skip
    args = parser.parse_args(argv)
    earlier = args.output.read_text() if args.output.exists() else ""
    text = render(args.mode or ("soak", "short"), earlier)
    args.output.write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
