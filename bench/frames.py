"""8. Large messages: bytes per second as messages grow, and the previous frame reassembly beside it.

A message larger than one read arrives over many reads. The worker used to glue each read onto what
it had (`pending + chunk`), copying the partial frame again every time: quadratic in the message's
size. It now keeps the reads in a list and joins them once (linear). Both run here side by side, the
previous one from a git worktree of `PREVIOUS`, on the same nsqd, the same messages and the same
cores, taking turns. Each run drains `bytes_per_run` bytes of no-op messages of one size.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import DASH, TIMES, Config, Cores, rotate, summary
from bench.harness import Command
from tests.rig.nsq import Nsqd
from tests.rig.tools import PROJECT_ROOT

PREVIOUS = "e8aa39f"  # the last commit whose worker reassembled frames with `pending + chunk`
CHANNEL = "bench"
MIB = 1024 * 1024
SIZES = (64 * 1024, MIB, 5 * MIB)
MAX_IN_FLIGHT = 20
NSQD_ARGS = [f"--max-msg-size={6 * MIB}", f"--max-body-size={16 * MIB}"]
COMPETITORS = ("worker", "previous")
LABELS = {"worker": "nsq-worker (this tree)", "previous": f"nsq-worker at {PREVIOUS} (pending + chunk)"}


def worktree(config: Config) -> Path:
    """A checkout of the previous worker (pure Python: it runs from its source, nothing to build)."""
    path = config.work / "worker-previous"
    if not path.exists():
        subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "worktree", "add", "--detach", str(path), PREVIOUS],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(PROJECT_ROOT), "worktree", "remove", "--force", str(path)],
                   check=False, capture_output=True, timeout=120)  # fmt: skip


def command(competitor: str, nsqd: Nsqd, topic: str, core: int, previous: Path) -> Command:
    where = ["--topic", topic, "--channel", CHANNEL, "--nsqd-tcp-address", nsqd.tcp_address]
    argv = [harness.PYTHON, "-m", "nsq_worker", "nsq_worker.examples:NoopWorker", *where]
    env = {"NSQ_HEALTH_PORT": "0", "NSQ_LOG_LEVEL": "WARNING", "NSQ_LOG_FORMAT": "text",
           "NSQ_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT), "NSQ_MAX_MSG_SIZE": str(6 * MIB)}  # fmt: skip
    if competitor == "previous":
        env["PYTHONPATH"] = str(previous / "worker" / "src")  # ahead of the installed package
    return Command(argv, env, [core])


def measure(config: Config, cores: Cores, nsqd: Nsqd, log: Callable[[str], None]) -> dict[str, Any]:
    previous = worktree(config)
    total = config.frames_bytes
    results: dict[str, Any] = {"previous": PREVIOUS, "bytes_per_run": total, "sizes": []}
    seq = 0
    try:
        for size in SIZES:
            count = max(4, total // size)
            body = b"x" * size
            entry: dict[str, Any] = {"size": size, "count": count, "competitors": {}}
            for round_ in range(config.repeats):
                for competitor in rotate(COMPETITORS, round_):
                    seq += 1
                    topic = f"fr{seq}-{competitor}"
                    harness.fill(nsqd, topic, CHANNEL, (body, count))
                    try:
                        run = harness.drain(
                            competitor,
                            [command(competitor, nsqd, topic, cores.consumer, previous)],
                            [(nsqd, topic, CHANNEL, count)],
                            config.work / "logs",
                            timeout=300,
                        )
                    finally:
                        harness.delete_topic(nsqd, topic)
                    runs = entry["competitors"].setdefault(competitor, {"runs": []})["runs"]
                    runs.append(run.as_dict())
                    log(
                        f"  {size // 1024} KiB round {round_ + 1} {competitor}: {count} in "
                        f"{run.seconds:.2f}s "
                        f"= {run.rate * size / MIB:,.0f} MiB/s{'' if run.exact else '  (NOT EXACT)'}"
                    )
            summarise(entry)
            results["sizes"].append(entry)
    finally:
        remove_worktree(previous)
    return results


def summarise(entry: dict[str, Any]) -> None:
    size = entry["size"]
    for data in entry["competitors"].values():
        runs = data["runs"]
        data["mib_per_s"] = summary([r["rate"] * size / MIB for r in runs])
        data["cpu_ms_per_mib"] = summary([r["consumer_cpu"] / (r["count"] * size / MIB) * 1e3 for r in runs])
        data["exact"] = all(r["exact"] for r in runs)
    worker, previous = (entry["competitors"][c]["runs"] for c in COMPETITORS)
    entry["ratio"] = summary([w["rate"] / p["rate"] for w, p in zip(worker, previous, strict=False)])


def report(result: dict[str, Any], add: Callable[[str], None]) -> None:
    add("## 8. Large messages: linear reassembly\n")
    add(
        "No-op messages of 64 KiB, 1 MiB and 5 MiB, "
        f"{result['bytes_per_run'] / MIB:,.0f} MiB a run, max in flight {MAX_IN_FLIGHT}, drained by "
        f"this tree's worker and by the worker of `{result['previous']}`, which glued each 256 KiB read "
        "onto the partial frame (`pending + chunk`, quadratic in the frame's size); this tree keeps the "
        "reads in a list and joins them once. Same nsqd (`--max-msg-size` 6 MiB), same cores, taking "
        "turns. MiB/s is the median of the runs; CPU is the consumer's user + system time per MiB.\n"
    )
    add("| size | messages a run | this tree MiB/s | its CPU ms/MiB | previous MiB/s | its CPU ms/MiB | "
        "this tree / previous (round by round) | exact |")  # fmt: skip
    add("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for entry in result["sizes"]:
        now, before = entry["competitors"]["worker"], entry["competitors"]["previous"]
        ratio = entry["ratio"]
        add(
            f"| {entry['size'] // 1024:,} KiB | {entry['count']:,} | {now['mib_per_s']['median']:,.0f} | "
            f"{now['cpu_ms_per_mib']['median']:.2f} | {before['mib_per_s']['median']:,.0f} | "
            f"{before['cpu_ms_per_mib']['median']:.2f} | {ratio['median']:.2f}{TIMES} "
            f"({ratio['min']:.2f}{DASH}{ratio['max']:.2f}) | "
            f"{'yes' if now['exact'] and before['exact'] else '**no**'} |"
        )
    growth = cost_growth(result)
    add(
        f"\n**Linear or not.** From 1 MiB to 5 MiB (both arrive over many reads) the consumer's CPU per "
        f"MiB changes {growth['worker']:.2f}{TIMES} for this tree and {growth['previous']:.2f}{TIMES} "
        "for the previous one: about 1 means the cost grows linearly with the message's size, and "
        "growth with the size means worse than linear (gluing each read onto the partial frame copies "
        "it once per read). A 64 KiB message mostly arrives within one 256 KiB read, so it pays "
        "neither.\n"
    )


def cost_growth(result: dict[str, Any]) -> dict[str, float]:
    """CPU per MiB at the largest size over that at 1 MiB, per competitor (derived, not stored)."""
    by_size = {entry["size"]: entry["competitors"] for entry in result["sizes"]}
    large, mid = by_size[SIZES[-1]], by_size[MIB]
    return {
        name: large[name]["cpu_ms_per_mib"]["median"] / mid[name]["cpu_ms_per_mib"]["median"]
        for name in COMPETITORS
    }
