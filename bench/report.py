"""BENCHMARKS.md and its charts, written from results.json (so a report can be redrawn without a rerun)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import autoscale, frames, latency, pods, repair, scaling, throughput
from bench import operator as operator_bench
from bench.common import DASH, TIMES
from tests.rig.tools import PROJECT_ROOT, binary

RESULTS_DIR = Path("docs") / "bench"  # committed beside BENCHMARKS.md (bench/results/ is ignored)
PACKAGES = (
    "nsq-worker",
    "gevent",
    "greenlet",
    "gnsq",
    "pynsq",
    "tornado",
    "dramatiq",
    "redis",
    "matplotlib",
)


# -- the machine --------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    return (
        (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else ""
    )


def _virtualisation() -> str:
    hypervisor = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        lscpu = ""
    for line in lscpu.splitlines():
        if line.startswith("Hypervisor vendor:"):
            hypervisor = f"a {line.split(':', 1)[1].strip()} virtual machine"
    container = _first_line(["systemd-detect-virt", "--container"])
    parts = [
        p for p in (hypervisor, f"in a {container} container" if container not in ("", "none") else "") if p
    ]
    return ", ".join(parts) or "bare metal"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = next(
        (
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "0",
    )
    os_name = "Linux"
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["nsqd"] = _first_line([binary("nsqd"), "--version"]).removeprefix("nsqd ")
    redis_version = _first_line(["redis-server", "--version"])
    versions["redis-server"] = next(
        (w[2:] for w in redis_version.split() if w.startswith("v=")), redis_version
    )
    commit = _first_line(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain"])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": os_name,
        "virtualisation": _virtualisation(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
    }


def para(text: str) -> str:
    """A paragraph written across source lines, as one Markdown line (and a blank line after)."""
    return " ".join(text.split()) + "\n"


# -- numbers ------------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _spread(s: dict[str, Any], fmt: Callable[[float], str]) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{fmt(s['min'])} {DASH} {fmt(s['max'])}"


def _busy(load: dict[str, Any] | None) -> str:
    return "n/a" if not load or load.get("median") is None else f"{100 * load['median']:.0f} %"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}{TIMES}"


def _goal(measured: float | None, target: float, higher: bool = True, unit: str = TIMES) -> tuple[str, str]:
    """(measured text, verdict) with how far off a missed goal is."""
    if measured is None:
        return "n/a", "not measured"
    text = f"{measured:,.0f}" if unit == "msg/s" else f"{measured:.2f}{unit}"
    if (measured >= target) if higher else (measured <= target):
        return text, "**met**"
    short = (1 - measured / target) * 100 if higher else (measured / target - 1) * 100
    return text, f"**missed** by {short:.0f} %"


def goals(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    tp = results.get("throughput")
    if tp:
        main = next(s for s in tp["settings"] if s["key"] == "mif2500")
        worker = main["competitors"]["worker"]["rate"]["median"]
        ratios = main["ratios"]
        rows.append(
            (
                "Worker ≥ 100,000 msg/s on one core (max in flight 2,500, no-op)",
                *_goal(worker, 100_000, unit="msg/s"),
            )
        )
        for name, target in (("gnsq", 10.0), ("pynsq", 2.0), ("bench_reader", 0.5)):
            rows.append(
                (
                    f"Worker ≥ {target:g}{TIMES} {throughput.LABELS[name]}",
                    *_goal(ratios.get(name, {}).get("median"), target),
                )
            )
    lat = results.get("latency")
    if lat:
        worker = lat["competitors"]["worker"]["seconds"]["median"]
        ratio = worker / lat["floor"] if worker else None
        rows.append(
            (
                "Latency-bound: worker within 10 % of the floor (time ÷ floor ≤ 1.10)",
                *_goal(ratio, 1.10, higher=False),
            )
        )
        rows.append(
            (
                "(context) the same, against the in-order bound at 2,500 in flight",
                *_goal(worker / lat["fifo_bound"] if worker else None, 1.10, higher=False),
            )
        )
        extra = lat["competitors"].get(latency.EXTRA, {}).get("seconds", {}).get("median")
        rows.append(
            (
                "(context) worker with every message in flight, against its floor (the longest sleep)",
                *_goal(extra / lat["extra_floor"] if extra else None, 1.10, higher=False),
            )
        )
    sc = results.get("scaling")
    if sc:
        for entry in sc["handlers"]:
            rows.append(
                (
                    f"One process per nsqd: speed-up ≥ 1.7 on two cores ({entry['label']})",
                    *_goal(entry["speedup"]["median"], 1.7),
                )
            )
    op = results.get("operator")
    if op:
        rows.extend(operator_bench.goals(op))
    au = results.get("autoscale")
    if au:
        rows.extend(autoscale.goals(au))
    return rows


def goal_notes(results: dict[str, Any]) -> list[str]:
    """Why a missed goal was missed, in the figures of this run."""
    notes = []
    lat = results.get("latency")
    if lat:
        worker = lat["competitors"]["worker"]["seconds"]["median"]
        notes.append(
            para(f"""
            - **Latency-bound.** The floor ({lat["floor"]:.2f} s) assumes the {lat["messages"]:,} tasks
            are packed perfectly into {lat["concurrency"]:,} slots. A consumer that takes messages in
            queue order, {lat["concurrency"]:,} at a time, cannot finish before the in-order bound,
            {lat["fifo_bound"]:.2f} s for these sleeps ({lat["fifo_bound"] / lat["floor"]:.2f}{TIMES}
            the floor): a {10 * lat["scale"]:g} s task that leaves the queue near its end still sleeps
            {10 * lat["scale"]:g} s. Every competitor, pynsq and dramatiq included, lands at that bound
            plus its start-up; the worker takes {worker:.2f} s, {100 * (worker / lat["fifo_bound"] - 1):.0f} %
            over it, start-up included. Given every message at once (nsqd's `--max-rdy-count` raised),
            the same worker comes within
            {100 * (lat["competitors"][latency.EXTRA]["seconds"]["median"] / lat["extra_floor"] - 1):.0f} %
            of that case's floor.
            """)
        )
    sc = results.get("scaling")
    if sc:
        noop = sc["handlers"][0]
        nsqd_cores = noop["sides"]["per_nsqd"]["nsqd_cores"]["median"]
        per_load = noop["sides"]["per_nsqd"]["consumer_load"]["median"]
        one_load = noop["sides"]["one_process"]["consumer_load"]["median"]
        notes.append(
            para(f"""
            - **One process per nsqd.** On this two-core machine the two nsqd run beside the consumers.
            With a no-op handler they use {nsqd_cores:.2f} of the two cores while the two worker
            processes run, and each worker keeps its core only {100 * per_load:.0f} % busy (the single
            process: {100 * one_load:.0f} %): the consumers wait on nsqd, so the speed-up
            ({noop["speedup"]["median"]:.2f}{TIMES}) measures nsqd on a shared machine more than the
            process layout. With a handler that does work (the second row), the consumers' CPU
            dominates and the layout is what is measured.
            """)
        )
    return notes


# -- charts -------------------------------------------------------------------------------------


def charts(results: dict[str, Any], directory: Path) -> dict[str, str]:
    """Draw the PNGs; returns {name: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, str] = {}
    colours = {"worker": "#1f77b4", "gnsq": "#ff7f0e", "pynsq": "#2ca02c", "bench_reader": "#7f7f7f"}

    tp = results.get("throughput")
    if tp:
        settings = tp["settings"]
        fig, ax = plt.subplots(figsize=(10, 5))
        width = 0.2
        for i, name in enumerate(throughput.COMPETITORS):
            xs, ys, lo, hi = [], [], [], []
            for j, setting in enumerate(settings):
                rate = setting["competitors"].get(name, {}).get("rate")
                if not rate or rate["median"] is None:
                    continue
                xs.append(j + (i - 1.5) * width)
                ys.append(rate["median"])
                lo.append(rate["median"] - rate["min"])
                hi.append(rate["max"] - rate["median"])
            bars = ax.bar(
                xs, ys, width, yerr=[lo, hi], capsize=3, label=throughput.LABELS[name], color=colours[name]
            )
            ax.bar_label(
                bars,
                labels=[f"{y / 1000:,.0f}k" if y >= 1000 else f"{y:.0f}" for y in ys],
                fontsize=7,
                padding=2,
            )
        ax.set_yscale("log")
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels([s["label"].replace(", ", "\n") for s in settings])
        ax.set_ylabel("messages per second (log scale)")
        ax.set_title("Throughput on one core: 200-byte messages (median of the runs; bars show the spread)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(directory / "throughput.png", dpi=110)
        plt.close(fig)
        drawn["throughput"] = "throughput.png"

    lat = results.get("latency")
    if lat:
        names = [n for n in lat["competitors"] if lat["competitors"][n]["seconds"]["n"]]
        fig, ax = plt.subplots(figsize=(10, 4))
        ys = list(range(len(names)))
        med = [lat["competitors"][n]["seconds"]["median"] for n in names]
        lo = [m - lat["competitors"][n]["seconds"]["min"] for m, n in zip(med, names, strict=True)]
        hi = [lat["competitors"][n]["seconds"]["max"] - m for m, n in zip(med, names, strict=True)]
        bars = ax.barh(ys, med, xerr=[lo, hi], capsize=3, color="#1f77b4")
        ax.bar_label(bars, labels=[f"{m:.2f} s" for m in med], padding=4, fontsize=8)
        ax.axvline(lat["floor"], color="red", linestyle="--", label=f"floor {lat['floor']:.2f} s")
        ax.axvline(
            lat["fifo_bound"],
            color="orange",
            linestyle=":",
            label=f"in-order bound at {lat['concurrency']:,} in flight {lat['fifo_bound']:.2f} s",
        )
        ax.set_yticks(ys)
        ax.set_yticklabels([latency.LABELS[n] for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("seconds to finish every task (lower is better)")
        ax.set_title(f"{lat['messages']:,} latency-bound tasks (mean sleep {lat['mean_sleep']:.2f} s)")
        ax.set_xlim(0, max(s["max"] for s in (lat["competitors"][n]["seconds"] for n in names)) * 1.12)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
        fig.tight_layout()
        fig.savefig(directory / "latency.png", dpi=110)
        plt.close(fig)
        drawn["latency"] = "latency.png"

    sc = results.get("scaling")
    if sc:
        entries = sc["handlers"]
        fig, axes = plt.subplots(1, len(entries), figsize=(5 * len(entries), 4), squeeze=False)
        for ax, entry in zip(axes[0], entries, strict=True):
            sides = list(scaling.SIDES)
            rates = [entry["sides"][side]["rate"] for side in sides]
            med = [r["median"] for r in rates]
            lo = [r["median"] - r["min"] for r in rates]
            hi = [r["max"] - r["median"] for r in rates]
            ax.bar(range(len(sides)), med, yerr=[lo, hi], capsize=4, color=["#aec7e8", "#1f77b4"])
            for x, r in enumerate(rates):
                ax.annotate(f"{r['median']:,.0f}", (x, r["median"]), xytext=(28, 4),
                            textcoords="offset points", ha="center", fontsize=8)  # fmt: skip
            ax.set_ylim(0, max(r["max"] for r in rates) * 1.12)
            ax.set_xticks(range(len(sides)))
            ax.set_xticklabels([scaling.LABELS[side].replace(" (", "\n(") for side in sides], fontsize=8)
            ax.set_ylabel("messages per second, both nsqd")
            ax.set_title(f"{entry['label']}: speed-up {entry['speedup']['median']:.2f}{TIMES}", fontsize=10)
        fig.tight_layout()
        fig.savefig(directory / "scaling.png", dpi=110)
        plt.close(fig)
        drawn["scaling"] = "scaling.png"

    au = results.get("autoscale")
    if au:
        drawn["autoscale"] = autoscale.chart(au, directory)
    return drawn


# -- the document -------------------------------------------------------------------------------


def render(results: dict[str, Any], drawn: dict[str, str], chart_dir: str) -> str:
    meta = results["meta"]
    m = meta["machine"]
    out: list[str] = []
    add = out.append
    add("# Benchmarks\n")
    add(
        f"Written by `{meta['command']}` on {meta['started']} (took {meta['duration'] / 60:.1f} min); "
        "do not edit by hand: `make bench` rewrites this file and the charts in "
        f"`{chart_dir}/`, with every figure in `{chart_dir}/results.json`.\n"
    )
    if meta.get("quick"):
        add(
            "> **Quick mode** (the smoke test's tiny sizes): the figures below say the harness works, "
            "nothing about speed.\n"
        )
    add(
        para(f"""
        Every figure is a median of repeated runs with its spread (min {DASH} max), and every comparison
        is a ratio of competitors measured side by side in the same run, on the same nsqd, the same
        messages and the same CPU pinning, taking turns round by round. The machine is shared with other
        work, so absolute figures move between runs; the ratios move much less.
        """)
    )

    add("## Goals\n")
    add("| goal | measured | |\n| --- | --- | --- |")
    for goal, measured, verdict in goals(results):
        add(f"| {goal} | {measured} | {verdict} |")
    add("")
    for note in goal_notes(results):
        add(note)
    add("")

    add("## The machine\n")
    add(f"- CPU: {m['cpu']}, {m['cores']} cores ({m['virtualisation']}), {m['memory_gib']} GiB memory")
    add(f"- {m['os']}, kernel {m['kernel']}; Python {m['python']}")
    add("- " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    load_end = meta.get("load_average_end")
    add(
        f"- commit {m['commit']}; load average (1, 5, 15 min) at the start {' '.join(m['load_average'])}"
        + (f", at the end {' '.join(load_end)}" if load_end else "")
        + ": the two cores are shared with whatever else runs on the machine"
    )
    add("")
    add("## How to reproduce\n")
    add(
        "```sh\nmake deps     # Debian packages (redis-server), Python packages, the pinned NSQ build\n"
        "make bench    # = .venv/bin/python -m bench: every benchmark (about 35 min on 2 cores)\n"
        ".venv/bin/python -m bench --only operator                       # the operator, about 20 min\n"
        ".venv/bin/python -m bench --only repair                         # repairs of workers, about 2 min\n"
        ".venv/bin/python -m bench --only autoscale                      # autoscaling, simulated, seconds\n"
        ".venv/bin/python -m bench --only throughput --messages 200000   # a subset, smaller\n"
        ".venv/bin/python -m bench --only frames                         # large messages, about 3 min\n"
        ".venv/bin/python -m bench --quick --out /tmp/b                  # the smoke test's sizes\n```\n"
    )
    add(f"This report came from: `{meta['command']}`.\n")

    sections = (
        ("throughput", _throughput),
        ("latency", _latency),
        ("scaling", _scaling),
        ("pods", _pods),
        ("operator", _operator),
        ("repair", _repair),
        ("autoscale", lambda r, d, c, a: autoscale.report(r, results, d, c, a)),
        ("frames", lambda r, d, c, a: frames.report(r, a)),
    )
    for name, section in sections:
        if name in results:
            section(results[name], drawn, chart_dir, add)
            data = results[name]
            add(
                f"*Measured {data.get('measured', '?')} in {data.get('took', 0) / 60:.1f} min by "
                f"`{data.get('command', '?')}`.*\n"
            )
    return "\n".join(out) + "\n"


def _throughput(
    tp: dict[str, Any], drawn: dict[str, str], chart_dir: str, add: Callable[[str], None]
) -> None:
    add("## 1. Throughput on one core\n")
    add(
        "200-byte messages are published to one nsqd (kept in memory: `--mem-queue-size` above the "
        "count) and the channel is full before a consumer starts, so only consumption is measured. nsqd "
        "and the benchmark driver run on one core, the consumer on the other (`taskset -c`). The "
        "competitors: this project's worker (`nsq-worker nsq_worker.examples:NoopWorker`, or "
        "`bench.consumers.workers:JsonWorker`), a stock gnsq `Consumer` with the same max in flight "
        "and a handler on `on_message`, pynsq's `Reader` (tornado), and NSQ's own Go `bench_reader` "
        "with `GOMAXPROCS=1`, the practical limit.\n"
    )
    add(
        para("""
        **Timing:** the driver polls nsqd's `/stats` for the channel every 20 ms; the clock starts at
        the first poll that sees a message delivered and stops at the first that sees the channel empty
        with nothing in flight, i.e. first delivery to last FIN within a poll interval at each end;
        interpreter start-up is left out (and shown as "start-up"). `bench_reader` flushes its FINs
        only when its write buffer fills, so it is done when every message has been delivered and at
        most one RDY window is unacknowledged; it cannot run with max in flight 1 (it stalls). CPU per
        message is the process's user + system time over the run (from /proc) divided by the
        messages; "consumer core busy" is that CPU time over the run's time (100 % = the consumer kept
        its core busy; less = it also waited for nsqd). "Exact": nsqd counted exactly the messages
        published into the channel, none requeued or timed out, none left.
        """)
    )
    add(
        "**Sizes:** runs have at most the requested number of messages; a probe run of about a second "
        "measures each competitor first and its timed runs get as many messages as make about "
        f"{tp.get('seconds', 6):g} s (so slow competitors and max in flight 1 get fewer messages than "
        "the fast ones; the count is in the table).\n"
    )
    if "throughput" in drawn:
        add(f"![throughput]({chart_dir}/{drawn['throughput']})\n")
    for setting in tp["settings"]:
        add(f"### {setting['label'][0].upper()}{setting['label'][1:]}\n")
        add(
            f"| competitor | messages a run | msg/s (median) | spread | worker is {TIMES} faster | "
            "start-up s | consumer CPU µs/msg | consumer core busy | nsqd CPU µs/msg | exact |"
        )
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for name in throughput.COMPETITORS:
            data = setting["competitors"].get(name)
            if data is None:
                continue
            if "skipped" in data:
                add(f"| {throughput.LABELS[name]} | | | | | | | | | n/a: {data['skipped']} |")
                continue
            rate = data["rate"]
            ratio = setting["ratios"].get(name)
            ratio_text = (
                "—"
                if name == "worker" or not ratio
                else (f"{_x(ratio['median'])} ({ratio['min']:.2f}{DASH}{ratio['max']:.2f})")
            )
            startups = sorted(r["startup"] for r in data["runs"])
            add(
                f"| {throughput.LABELS[name]} | {data['count']:,} | {_rate(rate['median'])} | "
                f"{_spread(rate, _rate)} | {ratio_text} | {startups[len(startups) // 2]:.2f} | "
                f"{data['cpu_us_per_msg']['median']:.1f} | {_busy(data.get('consumer_load'))} | "
                f"{data['nsqd_cpu_us_per_msg']['median']:.1f} | "
                f"{'yes' if data['exact'] else '**no**'} |"
            )
        add("")
    add(
        "Max in flight 1 is a round trip per message (deliver, FIN, deliver), so every client is "
        "bound by latency there, not by its own speed.\n"
    )
    for profile in tp.get("profiles", []):
        add(f"### Where the worker's time goes ({profile['label']})\n")
        run = profile.get("run", {})
        add(
            f"A sampling profiler (`bench/consumers/sampled_worker.py`: SIGPROF from a CPU-time timer, "
            f"the running greenlet's stack recorded) on one run of {run.get('count', 0):,} messages "
            f"({_rate(run.get('rate'))} msg/s under the profiler), {profile.get('samples', 0):,} samples. "
            "*self* is the innermost Python function with the C calls it makes (a socket send counts in "
            "its caller); *total* counts every function on the stack.\n"
        )
        samples = max(profile.get("samples", 0), 1)
        totals = dict(profile.get("total", []))
        add("| function | self | total |\n| --- | ---: | ---: |")
        for label, count in profile.get("self", [])[:15]:
            share, total = 100 * count / samples, 100 * totals.get(label, count) / samples
            add(f"| `{label}` | {share:.1f} % | {total:.1f} % |")
        add("")


def _latency(lat: dict[str, Any], drawn: dict[str, str], chart_dir: str, add: Callable[[str], None]) -> None:
    add("## 2. Latency-bound handlers\n")
    scale = lat["scale"]
    conc = f"{lat['concurrency']:,}"
    add(
        para(f"""
        dramatiq's latency benchmark on NSQ: {lat["messages"]:,} tasks whose handler sleeps
        {10 * scale:g} s for 1 %, {5 * scale:g} s for 29 %, {3 * scale:g} s for 20 % and
        {1 * scale:g} s for 50 % of them (mean {latency.MEAN * scale:.4g} s), drawn once with seed
        {lat["seed"]} (drawn mean {lat["mean_sleep"]:.3f} s), so every competitor gets the same sleeps
        in the same order. One process with {conc} handlers at once (max in flight {conc}, nsqd's
        default `--max-rdy-count`), pinned to one core; the broker on the other. The clock starts when
        the consumer process is started (boot included, as dramatiq's benchmark does) and stops when the
        last task is done: for NSQ when nsqd holds no message and none in flight (every FIN arrived;
        nsqd `/stats`); for dramatiq when the actor's count of finished tasks in Redis reaches N, the way
        dramatiq's own benchmark counts (dramatiq acknowledges in batches; the time its last
        acknowledgement reached Redis is in results.json as `acked`).
        """)
    )
    add(
        f"- **Floor** = max(N {TIMES} mean / concurrency, longest sleep) = max({lat['messages']:,} {TIMES} "
        f"{latency.MEAN * scale:.4g} s / {lat['concurrency']:,}, {10 * scale:g} s) = "
        f"**{lat['floor']:.2f} s** ({lat['drawn_floor']:.2f} s with the drawn sleeps)."
    )
    add(
        f"- **In-order bound** = {lat['fifo_bound']:.2f} s: when the last task would end if every task "
        f"started, in queue order, the instant one of the {lat['concurrency']:,} slots freed up, at no "
        "cost (computed for the drawn sleeps). No consumer that takes messages in order with that many in "
        "flight can beat it: a 10 s task that comes off the queue near the end still takes 10 s. The "
        "floor assumes perfect packing, which needs either the whole queue at once or reordering."
    )
    add(
        f"- The extra row runs the same worker with max in flight = every message (nsqd started with "
        f"`--max-rdy-count` raised to match): its floor is the longest sleep, {lat['extra_floor']:.2f} s.\n"
    )
    if "latency" in drawn:
        add(f"![latency]({chart_dir}/{drawn['latency']})\n")
    add("| consumer | seconds (median) | spread | ÷ floor | ÷ in-order bound | start-up s | exact |")
    add("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, data in lat["competitors"].items():
        s = data["seconds"]
        if not s["n"]:
            continue
        floor = lat["extra_floor"] if name == latency.EXTRA else lat["floor"]
        bound = lat["extra_floor"] if name == latency.EXTRA else lat["fifo_bound"]
        startups = sorted(r["startup"] for r in data["runs"])
        add(
            f"| {latency.LABELS[name]} | {s['median']:.2f} | {s['min']:.2f} {DASH} {s['max']:.2f} | "
            f"{s['median'] / floor:.2f} | {s['median'] / bound:.3f} | {startups[len(startups) // 2]:.2f} | "
            f"{'yes' if data['exact'] else '**no**'} |"
        )
    add("")
    add(
        "Published figures for the same 10,000 tasks, for context only (other hardware, other brokers, "
        "other concurrency): " + "; ".join(f"{k}: {v} s" for k, v in lat["published"].items()) + ".\n"
    )


def _scaling(sc: dict[str, Any], drawn: dict[str, str], chart_dir: str, add: Callable[[str], None]) -> None:
    add("## 3. One process per nsqd\n")
    add(
        para("""
        Two nsqd, each with the same number of 200-byte messages. Both sides run this project's worker
        (max in flight 2,500), so only the process layout differs. **One process** is
        `bench/consumers/two_in_one.py`: two of the worker's connections (two `NsqProcessWorker`
        instances, one per nsqd) in one gevent process pinned to one core. The worker's API allows
        it, and it compares like with like; a stock gnsq Consumer on both nsqd would measure gnsq, not
        the process layout. **One process per nsqd** is two `nsq-worker` processes, each pinned to a
        core of its own, as local mode and the operator's one-CPU pods run them. Time: first delivery
        on either nsqd until both channels are empty.
        """)
    )
    add(
        para("""
        The nsqds are not pinned: on this two-core machine they share the cores with the consumers on
        both sides, which a real deployment does not do (nsqd runs on its own hosts). With a no-op
        handler nsqd needs nearly as much CPU per message as the worker (see benchmark 1) and the
        consumers spend part of their time waiting for it, so a second consumer core has little to
        add and the speed-up stays well below 2. The second handler spends about 50 µs of CPU on each message
        (`bench.consumers.workers:CpuWorker`, a pure-Python checksum of the body), as real handlers
        do: there the consumers' CPU is what is spread, which is what the claim is about. "Consumer
        load" is the consumer processes' CPU time over the run's time, per process (1.00 = a core kept
        busy); "nsqd cores" is both nsqd's CPU time over the run's time.
        """)
    )
    if "scaling" in drawn:
        add(f"![scaling]({chart_dir}/{drawn['scaling']})\n")
    for entry in sc["handlers"]:
        title = entry["label"][0].upper() + entry["label"][1:]
        add(f"### {title}: {entry['messages_per_nsqd']:,} messages on each nsqd\n")
        add("| layout | msg/s (median, both nsqd) | spread | consumer load | nsqd cores | exact |")
        add("| --- | ---: | ---: | ---: | ---: | --- |")
        for side in scaling.SIDES:
            data = entry["sides"][side]
            add(
                f"| {scaling.LABELS[side]} | {_rate(data['rate']['median'])} | "
                f"{_spread(data['rate'], _rate)} | {data['consumer_load']['median']:.2f} | "
                f"{data['nsqd_cores']['median']:.2f} | {'yes' if data['exact'] else '**no**'} |"
            )
        sp = entry["speedup"]
        add("")
        spread = f"{sp['min']:.2f}{DASH}{sp['max']:.2f}"
        add(f"**Speed-up: {sp['median']:.2f}{TIMES}** (round by round {spread}).\n")


def _pods(result: dict[str, Any], drawn: dict[str, str], chart_dir: str, add: Callable[[str], None]) -> None:
    pods.report(result, add)


def _operator(
    result: dict[str, Any], drawn: dict[str, str], chart_dir: str, add: Callable[[str], None]
) -> None:
    operator_bench.report(result, add)


def _repair(
    result: dict[str, Any], drawn: dict[str, str], chart_dir: str, add: Callable[[str], None]
) -> None:
    repair.report(result, add)


def write(results: dict[str, Any], out: Path) -> Path:
    chart_dir = out / RESULTS_DIR
    drawn = charts(results, chart_dir)
    path = out / "BENCHMARKS.md"
    path.write_text(render(results, drawn, RESULTS_DIR.as_posix()))
    return path
