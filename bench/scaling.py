"""3. One process per nsqd: the claim the project stands on.

Two nsqd, each holding the same number of 200-byte messages. Both sides run this project's worker
(max in flight 2,500), so only the process layout differs:

- one process: `bench.consumers.two_in_one`, two of the worker's connections (two NsqProcessWorker
  instances, one per nsqd) in one gevent process, pinned to one core;
- one process per nsqd: two `nsq-worker` processes, each pinned to a core of its own (what local
  mode and the operator's one-CPU pods do).

The nsqds are not pinned: on two cores they share the machine with the consumers on both sides,
which a no-op handler makes plain (nsqd then needs nearly as much CPU per message as the worker).
So it runs twice: with the no-op handler, and with a handler that spends about 50 µs of CPU on
each message, as real handlers do (where the consumers' CPU, not nsqd's, is what is spread).
The time runs from the first delivery on either nsqd until both channels are empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import harness
from bench.common import Config, Cores, rotate, summary
from bench.harness import Command, Run
from bench.throughput import BODY, WORKER_ENV
from tests.rig.nsq import Nsqd

CHANNEL = "bench"
MAX_IN_FLIGHT = 2500
SIDES = ("one_process", "per_nsqd")
LABELS = {
    "one_process": "one process for both nsqd (one core)",
    "per_nsqd": "one process per nsqd (a core each)",
}


@dataclass(frozen=True)
class Handler:
    key: str
    label: str
    worker_class: str
    share: float  # of Config.scaling_messages: a slow handler gets fewer messages


HANDLERS = (
    Handler("noop", "no-op handler", "nsq_worker.examples:NoopWorker", 1.0),
    Handler("cpu", "handler with ~50 µs of CPU work", "bench.consumers.workers:CpuWorker", 0.1),
)


def commands(side: str, handler: Handler, nsqds: list[Nsqd], topic: str, cores: Cores) -> list[Command]:
    where = ["--topic", topic, "--channel", CHANNEL, "--max-in-flight", str(MAX_IN_FLIGHT)]
    if side == "one_process":
        addresses = [arg for nsqd in nsqds for arg in ("--nsqd-tcp-address", nsqd.tcp_address)]
        argv = [harness.PYTHON, "-m", "bench.consumers.two_in_one", handler.worker_class, *where, *addresses]
        return [Command(argv, {}, [cores.consumer])]
    worker = [str(harness.VENV_BIN / "nsq-worker"), handler.worker_class, *where]
    return [
        Command([*worker, "--nsqd-tcp-address", nsqd.tcp_address], WORKER_ENV, [core])
        for nsqd, core in zip(nsqds, (cores.consumer, cores.broker), strict=True)
    ]


def measure(config: Config, cores: Cores, nsqds: list[Nsqd], log: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {"nsqds": len(nsqds), "handlers": []}
    seq = 0
    for handler in HANDLERS:
        count = max(100, int(config.scaling_messages * handler.share))
        entry: dict[str, Any] = {
            "key": handler.key,
            "label": handler.label,
            "messages_per_nsqd": count,
            "sides": {side: {"runs": []} for side in SIDES},
        }
        runs: dict[str, list[Run]] = {side: [] for side in SIDES}
        for round_ in range(config.repeats):
            for side in rotate(SIDES, round_):
                seq += 1
                topic = f"sc{seq}-{side}"
                for nsqd in nsqds:
                    harness.fill(nsqd, topic, CHANNEL, (BODY, count))
                try:
                    run = harness.drain(
                        side,
                        commands(side, handler, nsqds, topic, cores),
                        [(nsqd, topic, CHANNEL, count) for nsqd in nsqds],
                        config.work / "logs",
                        timeout=120 + 10 * config.seconds,
                    )
                finally:
                    for nsqd in nsqds:
                        harness.delete_topic(nsqd, topic)
                runs[side].append(run)
                entry["sides"][side]["runs"].append(run.as_dict())
                log(
                    f"  scaling {handler.key} round {round_ + 1} {side}: {run.count:,} in {run.seconds:.2f}s "
                    f"= {run.rate:,.0f} msg/s{'' if run.exact else '  (NOT EXACT)'}"
                )
        for side in SIDES:
            data = entry["sides"][side]
            processes = 1 if side == "one_process" else len(nsqds)
            data["rate"] = summary([r.rate for r in runs[side]])
            data["consumer_load"] = summary([r.consumer_cpu / r.seconds / processes for r in runs[side]])
            data["nsqd_cores"] = summary([r.nsqd_cpu / r.seconds for r in runs[side]])
            data["exact"] = all(r.exact for r in runs[side])
        entry["speedup"] = summary(
            [p.rate / o.rate for o, p in zip(runs["one_process"], runs["per_nsqd"], strict=True)]
        )
        results["handlers"].append(entry)
    return results
