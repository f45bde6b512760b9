"""1. Throughput on one core: how fast each consumer drains 200-byte messages already in nsqd.

nsqd (and this driver) run on one core, the consumer on the other, pinned with taskset. Each
setting (max in flight 1, 100, 2,500; a no-op or a JSON-decoding handler) runs every competitor
`repeats` times, the competitors taking turns, each run on a fresh topic holding exactly the
messages it must consume. Before the timed runs, a probe run of about a second sizes each
competitor's run so it lasts about `seconds` (never more than `messages`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import Config, Cores, rotate, summary
from bench.harness import Command, Run
from tests.rig.nsq import Nsqd
from tests.rig.tools import binary

CHANNEL = "bench"
BODY = b"x" * 200
PROBE_MESSAGES = 200_000
PROBE_SECONDS = 1.0
MIN_MESSAGES = 2_000


def json_body(size: int = 200) -> bytes:
    """A 200-byte JSON object like an application event."""
    event: dict[str, Any] = {
        "id": 1234567890,
        "type": "page_view",
        "user": "u-00042",
        "at": "2026-01-01T12:00:00Z",
        "tags": ["a", "b", "c"],
        "score": 0.75,
        "pad": "",
    }
    event["pad"] = "x" * (size - len(json.dumps(event, separators=(",", ":")).encode()))
    body = json.dumps(event, separators=(",", ":")).encode()
    assert len(body) == size, len(body)
    return body


@dataclass(frozen=True)
class Setting:
    key: str
    label: str
    max_in_flight: int
    handler: str  # noop | json

    @property
    def body(self) -> bytes:
        return json_body() if self.handler == "json" else BODY


SETTINGS = (
    Setting("mif2500", "max in flight 2,500, no-op handler", 2500, "noop"),
    Setting("mif100", "max in flight 100, no-op handler", 100, "noop"),
    Setting("mif1", "max in flight 1, no-op handler", 1, "noop"),
    Setting("json", "max in flight 2,500, JSON-decoding handler", 2500, "json"),
)

COMPETITORS = ("worker", "gnsq", "pynsq", "bench_reader")
LABELS = {
    "worker": "nsq-worker (this project)",
    "gnsq": "gnsq 1.0.2 Consumer (stock)",
    "pynsq": "pynsq 0.9.1 Reader",
    "bench_reader": "NSQ bench_reader (Go, GOMAXPROCS=1)",
}
WORKER_CLASSES = {"noop": "nsq_worker.examples:NoopWorker", "json": "bench.consumers.workers:JsonWorker"}
WORKER_ENV = {"NSQ_HEALTH_PORT": "0", "NSQ_LOG_LEVEL": "WARNING", "NSQ_LOG_FORMAT": "text"}


def skip_reason(competitor: str, setting: Setting) -> str | None:
    if competitor != "bench_reader":
        return None
    if setting.handler != "noop":
        return "bench_reader has no handler to decode JSON with"
    if setting.max_in_flight < 4:
        return "bench_reader holds its FINs until its write buffer fills, so with RDY 1 it stalls"
    return None


def command(competitor: str, nsqd: Nsqd, topic: str, setting: Setting, core: int) -> Command:
    mif = str(setting.max_in_flight)
    where = ["--topic", topic, "--channel", CHANNEL, "--nsqd-tcp-address", nsqd.tcp_address]
    if competitor == "worker":
        argv = [str(harness.VENV_BIN / "nsq-worker"), WORKER_CLASSES[setting.handler], *where]
        return Command([*argv, "--max-in-flight", mif], WORKER_ENV, [core])
    if competitor == "gnsq":
        argv = [harness.PYTHON, "-m", "bench.consumers.gnsq_consumer", *where, "--handler", setting.handler]
        return Command([*argv, "--max-in-flight", mif], {}, [core])
    if competitor == "pynsq":
        argv = [harness.PYTHON, "-m", "bench.consumers.pynsq_reader", *where, "--handler", setting.handler]
        return Command([*argv, "--max-in-flight", mif], {}, [core])
    if competitor == "bench_reader":
        argv = [binary("bench_reader"), *where, "--rdy", mif, "--size", "200", "--runfor", "1h"]
        return Command(argv, {"GOMAXPROCS": "1"}, [core], unflushed=setting.max_in_flight)
    raise ValueError(competitor)


class Bench:
    def __init__(self, config: Config, cores: Cores, nsqd: Nsqd, log: Callable[[str], None]) -> None:
        self.config = config
        self.cores = cores
        self.nsqd = nsqd
        self.log = log
        self.seq = 0

    def run(self, competitor: str, setting: Setting, count: int, stop_after: float | None = None) -> Run:
        self.seq += 1
        topic = f"tp{self.seq}-{competitor}"
        harness.fill(self.nsqd, topic, CHANNEL, (setting.body, count))
        try:
            expected = self.config.seconds if stop_after is None else stop_after
            return harness.drain(
                competitor,
                [command(competitor, self.nsqd, topic, setting, self.cores.consumer)],
                [(self.nsqd, topic, CHANNEL, count)],
                self.config.work / "logs",
                timeout=60 + 10 * expected,
                stop_after=stop_after,
            )
        finally:
            harness.delete_topic(self.nsqd, topic)

    def size(self, competitor: str, setting: Setting) -> tuple[int, float | None]:
        """How many messages make a run of about `seconds` (probe run), at most `messages`."""
        config = self.config
        if not config.probe:
            return (max(config.messages // 10, 100) if setting.max_in_flight == 1 else config.messages), None
        probe = self.run(competitor, setting, min(config.messages, PROBE_MESSAGES), PROBE_SECONDS)
        count = int(probe.rate * config.seconds)
        count = max(MIN_MESSAGES, min(config.messages, round(count, -3)))
        return count, probe.rate


def measure(config: Config, cores: Cores, nsqd: Nsqd, log: Callable[[str], None]) -> dict[str, Any]:
    bench = Bench(config, cores, nsqd, log)
    results: dict[str, Any] = {"settings": []}
    for setting in SETTINGS:
        entry: dict[str, Any] = {
            "key": setting.key,
            "label": setting.label,
            "max_in_flight": setting.max_in_flight,
            "handler": setting.handler,
            "competitors": {},
        }
        competitors = [c for c in COMPETITORS if skip_reason(c, setting) is None]
        for competitor in COMPETITORS:
            reason = skip_reason(competitor, setting)
            if reason is not None:
                entry["competitors"][competitor] = {"skipped": reason}
        counts: dict[str, int] = {}
        for competitor in competitors:
            count, probe_rate = bench.size(competitor, setting)
            counts[competitor] = count
            entry["competitors"][competitor] = {"count": count, "probe_rate": probe_rate, "runs": []}
            if probe_rate is not None:
                log(
                    f"  {setting.key} {competitor}: probe {probe_rate:,.0f} msg/s -> {count:,} messages a run"
                )
        for round_ in range(config.repeats):
            for competitor in rotate(competitors, round_):
                run = bench.run(competitor, setting, counts[competitor])
                entry["competitors"][competitor]["runs"].append(run.as_dict())
                log(
                    f"  {setting.key} round {round_ + 1} {competitor}: {run.count:,} in {run.seconds:.2f}s "
                    f"= {run.rate:,.0f} msg/s{'' if run.exact else '  (NOT EXACT)'}"
                )
        summarise(entry)
        results["settings"].append(entry)
    if config.profile:
        results["profiles"] = profiles(bench, config, cores, nsqd, log)
    return results


def summarise(entry: dict[str, Any]) -> None:
    """Median and spread of each competitor's rate; the worker's ratio to each, round by round."""
    competitors = entry["competitors"]
    for data in competitors.values():
        if "runs" in data:
            data["rate"] = summary([r["rate"] for r in data["runs"]])
            data["cpu_us_per_msg"] = summary([r["consumer_cpu"] / r["count"] * 1e6 for r in data["runs"]])
            data["nsqd_cpu_us_per_msg"] = summary([r["nsqd_cpu"] / r["count"] * 1e6 for r in data["runs"]])
            data["consumer_load"] = summary([r["consumer_cpu"] / r["seconds"] for r in data["runs"]])
            data["exact"] = all(r["exact"] for r in data["runs"])
    worker = competitors.get("worker", {}).get("runs", [])
    ratios: dict[str, Any] = {}
    for name, data in competitors.items():
        if name == "worker" or "runs" not in data:
            continue
        pairs = [w["rate"] / o["rate"] for w, o in zip(worker, data["runs"], strict=False)]
        ratios[name] = summary(pairs)
    entry["ratios"] = ratios


def profiles(
    bench: Bench, config: Config, cores: Cores, nsqd: Nsqd, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The worker under a sampling profiler, once per handler, with max in flight 2,500."""
    out = []
    for setting in (s for s in SETTINGS if s.max_in_flight == 2500):
        bench.seq += 1
        topic = f"tp{bench.seq}-profile"
        count = config.messages
        harness.fill(nsqd, topic, CHANNEL, (setting.body, count))
        path = config.work / f"profile-{setting.key}.json"
        base = command("worker", nsqd, topic, setting, cores.consumer)
        argv = [harness.PYTHON, "-m", "bench.consumers.sampled_worker", str(path), *base.argv[1:]]
        profiled = Command(argv, base.env, base.cores, graceful=True)
        try:
            run = harness.drain(
                "worker-profiled",
                [profiled],
                [(nsqd, topic, CHANNEL, count)],
                config.work / "logs",
                timeout=60 + 10 * config.seconds,
            )
        finally:
            harness.delete_topic(nsqd, topic)
        data = _read_profile(path)
        samples = data.get("samples", 0)
        log(f"  profile {setting.key}: {run.rate:,.0f} msg/s under the profiler, {samples} samples")
        out.append({"key": setting.key, "label": setting.label, "run": run.as_dict(), **data})
    return out


def _read_profile(path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not path.exists():
        return {"samples": 0, "self": [], "total": [], "error": "the profiled worker wrote no samples"}
    data: dict[str, Any] = json.loads(path.read_text())
    return data
