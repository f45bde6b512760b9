"""`python -m bench` (`make bench`): run the benchmarks on the rig and write BENCHMARKS.md.

python -m bench                                   # everything, default sizes (~35 min on 2 cores)
python -m bench --only throughput,scaling         # a subset; the other sections of the report stay
python -m bench --quick --out /tmp/b              # tiny sizes, seconds: the smoke test
python -m bench --only operator                   # the operator, previous design vs v2 (~20 min)
python -m bench --only operator --quick           # the same at tiny sizes (~3 min)
python -m bench --only repair                     # edited and deleted workers put back (~2 min)
python -m bench --only autoscale                  # autoscaling per nsqd vs KEDA-style, simulated (~5 s)
python -m bench --only autoscale_node             # the autoscaler on the real node vs fixed counts (~12 min)
python -m bench --only frames                     # large messages, vs the previous reassembly (~3 min)
python -m bench --report-only                     # redraw BENCHMARKS.md from docs/bench/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    autoscale,
    autoscale_node,
    frames,
    harness,
    latency,
    pods,
    repair,
    report,
    scaling,
    throughput,
)
from bench import operator as operator_bench
from bench.common import BENCHMARKS, NODE_BENCHMARKS, SLOW_BENCHMARKS, Config, Cores
from tests.rig.tools import PROJECT_ROOT


def log(text: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse(argv: Sequence[str]) -> tuple[Config, bool, bool]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)}")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the harness")
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT,
        help="where BENCHMARKS.md and docs/bench/ go (default: .)",
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch directory (default: a temporary one)"
    )
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch directory (logs, data)")
    parser.add_argument("--repeats", type=int, help="runs of each competitor (default 3)")
    parser.add_argument("--messages", type=int, help="throughput: most messages in a run (default 1,000,000)")
    parser.add_argument("--seconds", type=float, help="throughput: target length of a run (default 6)")
    parser.add_argument("--no-probe", action="store_true",
                        help="throughput: every run gets --messages (1/10 with max in flight 1)")  # fmt: skip
    parser.add_argument("--no-profile", action="store_true", help="throughput: skip the profiled runs")
    parser.add_argument("--latency-messages", type=int, help="latency: tasks (default 10,000)")
    parser.add_argument(
        "--scaling-messages", type=int, help="scaling: messages on each nsqd (default 500,000)"
    )
    parser.add_argument(
        "--operator-previous",
        metavar="COMMIT",
        help="operator: the previous design's commit, run from a git worktree at /tmp/nsqop-prev "
        "(default d30979e)",
    )
    parser.add_argument(
        "--operator-v2",
        metavar="SRC",
        type=Path,
        help="operator: run the v2 side from this operator/src instead of the work tree "
        "(e.g. /tmp/nsqop-prev/operator/src, the previous design on both sides, to check the harness)",
    )
    parser.add_argument("--report-only", action="store_true", help="only redraw the report from results.json")
    args = parser.parse_args(argv)

    default = [b for b in BENCHMARKS if not (args.quick and b in (*NODE_BENCHMARKS, *SLOW_BENCHMARKS))]
    only = tuple(part.strip() for part in (args.only or ",".join(default)).split(",") if part.strip())
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(
            f"--only: unknown benchmark(s) {', '.join(sorted(unknown))}; pick from {', '.join(BENCHMARKS)}"
        )
    # Made (and, unless kept, removed) by run(); --report-only never touches it.
    work = args.work or Path(tempfile.gettempdir()) / f"nsq-bench-{os.getpid()}"
    out = args.out.resolve()
    config = Config.quick_mode(work, out, only) if args.quick else Config(work=work, out=out, only=only)
    for name in ("repeats", "messages", "seconds", "latency_messages", "scaling_messages"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    if args.operator_previous is not None:
        config.operator_previous = args.operator_previous
    if args.operator_v2 is not None:
        config.operator_v2 = args.operator_v2
    if args.no_probe:
        config.probe = False
    if args.no_profile:
        config.profile = False
    config.argv = list(argv)
    return config, args.report_only, args.keep_work or args.work is not None


def run(config: Config) -> dict[str, Any]:
    cores = Cores.pick()
    config.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    log(f"scratch directory {config.work}; nsqd on core {cores.broker}, consumers on core {cores.consumer}")
    if "throughput" in config.only:
        log("1. throughput on one core")
        started = time.monotonic()
        cores.pin_driver()
        cluster = harness.start_cluster(config.work / "nsq-throughput", [[]], [cores.broker])
        try:
            results["throughput"] = throughput.measure(config, cores, cluster.nsqds[0], log)
        finally:
            cluster.stop()
            cores.unpin_driver()
        results["throughput"].update(seconds=config.seconds, messages=config.messages)
        results["throughput"]["took"] = time.monotonic() - started
    if "latency" in config.only:
        log("2. latency-bound handlers")
        started = time.monotonic()
        cores.pin_driver()
        wide = [f"--max-rdy-count={max(config.latency_messages, 2500)}"]
        cluster = harness.start_cluster(config.work / "nsq-latency", [[], wide], [cores.broker])
        try:
            results["latency"] = latency.measure(config, cores, cluster.nsqds[0], cluster.nsqds[1], log)
        finally:
            cluster.stop()
            cores.unpin_driver()
        results["latency"]["took"] = time.monotonic() - started
    if "scaling" in config.only:
        log("3. one process per nsqd")
        started = time.monotonic()
        cluster = harness.start_cluster(config.work / "nsq-scaling", [[], []], None)
        try:
            results["scaling"] = scaling.measure(config, cores, cluster.nsqds, log)
        finally:
            cluster.stop()
        results["scaling"]["took"] = time.monotonic() - started
    if "pods" in config.only:
        log("4. pods on the real node")
        started = time.monotonic()
        results["pods"] = pods.measure(config, log)
        results["pods"]["took"] = time.monotonic() - started
    if "operator" in config.only:
        log("5. the operator: previous design vs v2")
        started = time.monotonic()
        results["operator"] = operator_bench.measure(config, log)
        results["operator"]["took"] = time.monotonic() - started
    if "repair" in config.only:
        log("6. repairs of edited and deleted workers: previous design vs v2")
        started = time.monotonic()
        results["repair"] = repair.measure(config, log)
        results["repair"]["took"] = time.monotonic() - started
    if "autoscale" in config.only:
        log("7. autoscaling: per-nsqd vs KEDA-style vs fixed (a simulation)")
        started = time.monotonic()
        results["autoscale"] = autoscale.measure(config, log)
        results["autoscale"]["took"] = time.monotonic() - started
    if "autoscale_node" in config.only:
        log("7. autoscaling on the real node: per-nsqd vs fixed counts")
        started = time.monotonic()
        results["autoscale_node"] = autoscale_node.measure(config, log)
        results["autoscale_node"]["took"] = time.monotonic() - started
    if "frames" in config.only:
        log("8. large messages: linear reassembly vs the previous one")
        started = time.monotonic()
        cores.pin_driver()
        cluster = harness.start_cluster(config.work / "nsq-frames", [frames.NSQD_ARGS], [cores.broker])
        try:
            results["frames"] = frames.measure(config, cores, cluster.nsqds[0], log)
        finally:
            cluster.stop()
            cores.unpin_driver()
        results["frames"]["took"] = time.monotonic() - started
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config, report_only, keep = parse(argv)
    results_path = config.out / report.RESULTS_DIR / "results.json"
    previous: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    if report_only:
        if not previous:
            log(f"no {results_path} to draw from")
            return 1
        log(f"wrote {report.write(previous, config.out)}")
        return 0

    started_wall = datetime.now(UTC)
    started = time.monotonic()
    command = shlex.join([".venv/bin/python", "-m", "bench", *argv])
    meta: dict[str, Any] = {
        "command": command,
        "started": started_wall.strftime("%Y-%m-%d %H:%M UTC"),
        "quick": config.quick,
        "machine": report.machine(),
    }
    try:
        measured = run(config)
    finally:
        if not keep:
            shutil.rmtree(config.work, ignore_errors=True)
    meta["duration"] = time.monotonic() - started
    meta["load_average_end"] = Path("/proc/loadavg").read_text().split()[:3]
    for section in measured.values():
        section["command"] = command
        section["measured"] = meta["started"]
    # A subset run keeps the other sections of an earlier full run (each says when it was measured).
    keep_previous = previous if not config.quick and not previous.get("meta", {}).get("quick") else {}
    results = {**{k: v for k, v in keep_previous.items() if k in BENCHMARKS}, **measured, "meta": meta}
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {results_path} and {report.write(results, config.out)} in {meta['duration'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
